-- The ERP's inbox: where the ERP sink connector (connectors/connect/erp-inbox-sink.json)
-- delivers pssync's commands from erp.cmd.employee, erp.cmd.project and
-- erp.cmd.time_entry, one row per command_id, for the ERP to apply.
--
-- Exactly once per command_id. The sink is at-least-once (after a crash or a restart it
-- redelivers from its last committed offsets) and writes in upsert mode keyed by
-- command_id; the trigger below turns a redelivery into a no-op that only counts it
-- (`deliveries`), so a command already in the inbox is never changed or applied twice.
--
-- Columns: the command's envelope, then its payload flattened by the sink's Flatten
-- transform into payload_<field> columns (the union of the three payload records,
-- each nullable as every command type fills only its own). `payload` is the same as
-- one jsonb object, built on insert, for consumers that want the record whole. A
-- payload field added to the contract later is added as a column by the sink
-- (schema.evolution=basic) and lands in `payload` without a change here.
--
-- Idempotent: loading it again changes nothing.

CREATE SCHEMA IF NOT EXISTS erp_inbox;

CREATE TABLE IF NOT EXISTS erp_inbox.command (
    command_id                  varchar(64)  PRIMARY KEY,
    topic                       varchar(249) NOT NULL,
    type                        varchar(40)  NOT NULL,
    entity_id                   varchar(64)  NOT NULL,
    correlation_id              varchar(64)  NOT NULL,
    issued_at                   timestamp    NOT NULL,
    rule                        varchar(64),
    -- erp.cmd.employee
    payload_worker_id           varchar(64),
    payload_erp_employee_id     varchar(64),
    payload_is_active           boolean,
    payload_cost_center         varchar(64),
    payload_legal_entity        varchar(64),
    payload_full_name           varchar(200),
    payload_email               varchar(320),
    payload_employment_status   varchar(16),
    payload_hire_date           date,
    payload_termination_date    date,
    payload_manager_id          varchar(64),
    payload_job_profile         varchar(100),
    -- erp.cmd.project
    payload_project_id          varchar(64),
    payload_erp_project_id      varchar(64),
    payload_customer_id         varchar(64),
    payload_crm_account_id      varchar(64),
    payload_sow_id              varchar(64),
    payload_name                varchar(200),
    payload_currency            varchar(3),
    payload_status              varchar(16),
    payload_billing_type        varchar(24),
    payload_project_template    varchar(100),
    payload_start_date          date,
    payload_end_date            date,
    -- erp.cmd.time_entry
    payload_time_entry_id       varchar(64),
    payload_version             integer,
    payload_work_date           date,
    payload_hours               numeric(6,2),
    payload_billable            boolean,
    payload_cost_rate           numeric(12,2),
    payload_cost_amount         numeric(12,2),
    payload_period_id           varchar(80),
    payload_reverses_command_id varchar(64),
    -- the inbox's own
    payload                     jsonb,
    applied_at                  timestamp    NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    deliveries                  integer      NOT NULL DEFAULT 1,
    last_delivered_at           timestamp    NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

CREATE INDEX IF NOT EXISTS command_entity_idx ON erp_inbox.command (entity_id, issued_at);

-- On insert: `payload` as one jsonb object from the payload_* columns (nulls dropped).
CREATE OR REPLACE FUNCTION erp_inbox.command_payload() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.payload := (
        SELECT coalesce(jsonb_object_agg(substr(key, 9), value), '{}'::jsonb)
        FROM jsonb_each(to_jsonb(NEW))
        WHERE key LIKE 'payload\_%' AND value <> 'null'::jsonb
    );
    RETURN NEW;
END
$$;

-- On a redelivery (the sink's upsert of a command_id already here): keep the row as
-- first applied and count the delivery.
CREATE OR REPLACE FUNCTION erp_inbox.command_redelivered() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    OLD.deliveries := OLD.deliveries + 1;
    OLD.last_delivered_at := now() AT TIME ZONE 'UTC';
    RETURN OLD;
END
$$;

CREATE OR REPLACE TRIGGER command_payload
    BEFORE INSERT ON erp_inbox.command
    FOR EACH ROW EXECUTE FUNCTION erp_inbox.command_payload();

CREATE OR REPLACE TRIGGER command_redelivered
    BEFORE UPDATE ON erp_inbox.command
    FOR EACH ROW EXECUTE FUNCTION erp_inbox.command_redelivered();

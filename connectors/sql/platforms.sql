-- The platforms' tables as PostgreSQL holds them: one schema per platform (hr, erp,
-- crm, psa), one table per contract topic. A Debezium PostgreSQL connector with
-- topic.prefix `cdc` captures `<schema>.<table>` into `cdc.<schema>.<table>`, so the
-- names here are the contract's (avro/contract.py TABLES; ../shared/domain.md).
--
-- Types are chosen for what Debezium emits with decimal.handling.mode=precise and
-- time.precision.mode=connect:
--   varchar          -> string (enumerations are varchar with a CHECK of the contract's set)
--   boolean, integer -> boolean, int
--   date             -> Connect Date      -> Avro int/date
--   timestamp        -> Connect Timestamp -> Avro long/timestamp-millis. WITHOUT time
--                       zone and holding UTC: timestamptz would be emitted as
--                       io.debezium.time.ZonedTimestamp, a string.
--   numeric(12,2)    -> Connect Decimal   -> Avro bytes/decimal (money, rates)
--   numeric(6,2)     -> the same, for hours
-- NOT NULL wherever the contract's field is not nullable. REPLICA IDENTITY FULL gives
-- updates and deletes a complete before-image.
--
-- Idempotent: loading it again changes nothing.

CREATE SCHEMA IF NOT EXISTS hr;
CREATE SCHEMA IF NOT EXISTS erp;
CREATE SCHEMA IF NOT EXISTS crm;
CREATE SCHEMA IF NOT EXISTS psa;

-- HR: the system of record for worker identity and employment.
CREATE TABLE IF NOT EXISTS hr.worker (
    worker_id          varchar(64)  PRIMARY KEY,
    full_name          varchar(200) NOT NULL,
    email              varchar(320) NOT NULL,
    employment_status  varchar(16)  NOT NULL
        CONSTRAINT worker_employment_status_check
        CHECK (employment_status IN ('ACTIVE', 'LEAVE', 'TERMINATED')),
    hire_date          date         NOT NULL,
    termination_date   date,
    cost_center        varchar(64),
    legal_entity       varchar(64)  NOT NULL,
    manager_id         varchar(64),
    job_profile        varchar(100) NOT NULL,
    updated_at         timestamp    NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

-- ERP
CREATE TABLE IF NOT EXISTS erp.employee (
    erp_employee_id  varchar(64) PRIMARY KEY,
    worker_id        varchar(64),
    is_active        boolean     NOT NULL,
    cost_center      varchar(64),
    legal_entity     varchar(64) NOT NULL,
    updated_at       timestamp   NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

CREATE TABLE IF NOT EXISTS erp.cost_rate (
    rate_id         varchar(64)   PRIMARY KEY,
    worker_id       varchar(64)   NOT NULL,
    effective_from  date          NOT NULL,
    effective_to    date,
    rate            numeric(12,2) NOT NULL,
    currency        varchar(3)    NOT NULL
);

CREATE TABLE IF NOT EXISTS erp.cost_center (
    cost_center_id  varchar(64) PRIMARY KEY,
    legal_entity    varchar(64) NOT NULL,
    is_active       boolean     NOT NULL
);

CREATE TABLE IF NOT EXISTS erp.customer (
    customer_id     varchar(64)  PRIMARY KEY,
    crm_account_id  varchar(64)  NOT NULL,
    name            varchar(200) NOT NULL,
    status          varchar(20)  NOT NULL
        CONSTRAINT customer_status_check
        CHECK (status IN ('PENDING_APPROVAL', 'APPROVED', 'ON_HOLD', 'INACTIVE')),
    legal_entity    varchar(64)  NOT NULL,
    tax_profile     varchar(64),
    currency        varchar(3)   NOT NULL
);

CREATE TABLE IF NOT EXISTS erp.project (
    erp_project_id  varchar(64) PRIMARY KEY,
    project_id      varchar(64),
    customer_id     varchar(64) NOT NULL,
    legal_entity    varchar(64) NOT NULL,
    currency        varchar(3)  NOT NULL,
    status          varchar(16) NOT NULL
        CONSTRAINT project_status_check CHECK (status IN ('PENDING', 'ACTIVE', 'CLOSED'))
);

CREATE TABLE IF NOT EXISTS erp.period (
    period_id     varchar(80) PRIMARY KEY,
    legal_entity  varchar(64) NOT NULL,
    period        varchar(7)  NOT NULL
        CONSTRAINT period_format_check CHECK (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    status        varchar(8)  NOT NULL
        CONSTRAINT period_status_check CHECK (status IN ('OPEN', 'CLOSED')),
    CONSTRAINT period_id_check CHECK (period_id = legal_entity || ':' || period)
);

-- CRM
CREATE TABLE IF NOT EXISTS crm.sow (
    sow_id            varchar(64)   PRIMARY KEY,
    crm_account_id    varchar(64)   NOT NULL,
    legal_entity      varchar(64)   NOT NULL,
    currency          varchar(3)    NOT NULL,
    project_template  varchar(100)  NOT NULL,
    status            varchar(16)   NOT NULL
        CONSTRAINT sow_status_check CHECK (status IN ('DRAFT', 'SIGNED', 'CANCELLED')),
    signed_at         timestamp,
    total_value       numeric(12,2) NOT NULL
);

-- PSA
CREATE TABLE IF NOT EXISTS psa.project (
    project_id      varchar(64)  PRIMARY KEY,
    sow_id          varchar(64),
    crm_account_id  varchar(64)  NOT NULL,
    name            varchar(200) NOT NULL,
    legal_entity    varchar(64)  NOT NULL,
    currency        varchar(3)   NOT NULL,
    status          varchar(16)  NOT NULL
        CONSTRAINT project_status_check
        CHECK (status IN ('PLANNED', 'ACTIVE', 'ON_HOLD', 'CLOSED')),
    billing_type    varchar(24)  NOT NULL
        CONSTRAINT project_billing_type_check
        CHECK (billing_type IN ('TIME_AND_MATERIALS', 'FIXED_FEE')),
    start_date      date         NOT NULL,
    end_date        date
);

CREATE TABLE IF NOT EXISTS psa.assignment (
    assignment_id   varchar(64)   PRIMARY KEY,
    project_id      varchar(64)   NOT NULL,
    worker_id       varchar(64)   NOT NULL,
    role            varchar(100)  NOT NULL,
    start_date      date          NOT NULL,
    end_date        date          NOT NULL,
    allocation_pct  integer       NOT NULL,
    bill_rate       numeric(12,2) NOT NULL,
    status          varchar(16)   NOT NULL
        CONSTRAINT assignment_status_check
        CHECK (status IN ('PROPOSED', 'CONFIRMED', 'CANCELLED'))
);

CREATE TABLE IF NOT EXISTS psa.time_entry (
    time_entry_id  varchar(64)  PRIMARY KEY,
    worker_id      varchar(64)  NOT NULL,
    project_id     varchar(64)  NOT NULL,
    assignment_id  varchar(64),
    work_date      date         NOT NULL,
    hours          numeric(6,2) NOT NULL,
    billable       boolean      NOT NULL,
    status         varchar(16)  NOT NULL
        CONSTRAINT time_entry_status_check
        CHECK (status IN ('DRAFT', 'SUBMITTED', 'APPROVED', 'REJECTED')),
    approved_at    timestamp
);

ALTER TABLE hr.worker REPLICA IDENTITY FULL;
ALTER TABLE erp.employee REPLICA IDENTITY FULL;
ALTER TABLE erp.cost_rate REPLICA IDENTITY FULL;
ALTER TABLE erp.cost_center REPLICA IDENTITY FULL;
ALTER TABLE erp.customer REPLICA IDENTITY FULL;
ALTER TABLE erp.project REPLICA IDENTITY FULL;
ALTER TABLE erp.period REPLICA IDENTITY FULL;
ALTER TABLE crm.sow REPLICA IDENTITY FULL;
ALTER TABLE psa.project REPLICA IDENTITY FULL;
ALTER TABLE psa.assignment REPLICA IDENTITY FULL;
ALTER TABLE psa.time_entry REPLICA IDENTITY FULL;

"""The chaos bench: a seeded firm streamed while workers are SIGKILLed (some losing their
local state), the broker and the schema registry restart and the ERP sink stops, compared
with a fault-free run of the same input; and a burst at 10x the rate, with memory and lag
sampled. `python -m bench.chaos --help`; `tests/test_chaos.py` is its CI-sized variant.
"""

"""Schemathesis hooks for tests/test_gateway_schema.py (loaded through SCHEMATHESIS_HOOKS).

Generated registrations never name a launcher: a launcher's ``options.command``
is a program the gateway runs, and random programs have no place in a test.
Registrations without one use the test gateway's default launcher, a
``python -c pass`` that ends at once. (Schemathesis' coverage phase may still
send a launcher of boundary values; those carry no command.)
"""

import schemathesis


@schemathesis.hook
def filter_body(context, body):
    return not (isinstance(body, dict) and "launcher" in body)

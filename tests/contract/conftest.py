"""The shipped conformance suite (dddframe.testing.contract) on each of our transports.

Each test_<transport>.py subclasses TransportContract once per backend and provides the
``harness`` fixture; expected_failures lists, per backend, the scenarios that fail today with
the defect that makes them fail (strict xfails: a fix turns them into failures until removed).
"""

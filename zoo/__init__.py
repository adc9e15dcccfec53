"""The wsk model zoo (installed as ``wsk.zoo``)."""

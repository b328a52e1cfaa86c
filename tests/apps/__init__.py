"""Small example applications that ``freshkeep --app`` is pointed at in the tests."""

"""Pure decisions and mechanisms: no adapter, framework or driver is imported here."""

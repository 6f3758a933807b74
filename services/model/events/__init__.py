"""Every domain event, one module per service that decides it. Importing a module registers its events."""

"""The HTTP routes: one module per resource family, thin views over web.query and the core."""

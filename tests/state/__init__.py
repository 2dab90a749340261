"""Python session state: namespaces kept between executions, the state routes, attacks."""

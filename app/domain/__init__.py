"""Domain areas of the API, each with its controller, service and schemas together."""

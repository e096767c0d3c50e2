"""One controller per resource; each handler parses, calls one application service, shapes."""

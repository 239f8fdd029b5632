//! Catalog, placement, routing and long polling: the API every adapter calls.

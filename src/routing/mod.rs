//! L5: trunks, outbound rules, DIDs and health checks (being written).

//! Starts `moto_server` on a free loopback port for tests (filled by the AWS backend work).

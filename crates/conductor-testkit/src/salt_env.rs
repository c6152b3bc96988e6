//! A project-local virtualenv with the real `salt` package, for tests (filled by the Salt work).

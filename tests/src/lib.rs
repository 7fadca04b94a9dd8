//! Integration-test fixtures.

//! Dev-only test harness shared by the workspace's test suites.

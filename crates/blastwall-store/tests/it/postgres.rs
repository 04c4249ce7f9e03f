//! The shared suite on a throwaway PostgreSQL cluster.

use crate::backend::Backend;

all_suite_tests!(Backend::postgres);

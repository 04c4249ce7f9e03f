//! One module per subcommand.

pub(crate) mod backup;
pub(crate) mod config;
pub(crate) mod demo;
pub(crate) mod env;
pub(crate) mod init;
pub(crate) mod log;
pub(crate) mod scan;
pub(crate) mod serve;
pub(crate) mod token;
pub(crate) mod upstream;
pub(crate) mod vault;
pub(crate) mod wall;

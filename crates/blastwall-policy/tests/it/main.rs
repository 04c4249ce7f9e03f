//! Integration tests of blastwall-policy: one binary, a module per area.

#[cfg(test)]
mod authz;
#[cfg(test)]
mod catalog;
#[cfg(test)]
mod classify;
#[cfg(test)]
mod props;

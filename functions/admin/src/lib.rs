//! `mesh-admin`: the operator commands (DESIGN §7), in a crate of their own so the Lambda
//! function links neither them nor `clap`.

// `admin` was a module of the `mesh` library and still names its modules `crate::config`,
// `crate::store`, ...: the library's modules are brought into this crate's root under the same
// names.
use mesh::*;

pub mod admin;

//! Fuzz targets for porch's parsers and protocol code.
//!
//! Each module has `run(&[u8])`, which panics when a property fails. The same functions
//! back the coverage-guided libFuzzer binaries (`fuzz_targets/`, `cargo fuzz run NAME`)
//! and the plain bounded random-input run (`tests/random.rs`) that the test suite uses.

pub mod config_toml;
pub mod ipc_roundtrip;
pub mod ipc_stream;
pub mod route_path;
pub mod static_path;
pub mod strict_split;

/// Every target by name, as the directories under `seeds/` and `dict/` name them.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("config_toml", config_toml::run),
    ("ipc_stream", ipc_stream::run),
    ("ipc_roundtrip", ipc_roundtrip::run),
    ("route_path", route_path::run),
    ("static_path", static_path::run),
    ("strict_split", strict_split::run),
];

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| porch_fuzz::config_toml::run(data));

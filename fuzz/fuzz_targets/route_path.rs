#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| porch_fuzz::route_path::run(data));

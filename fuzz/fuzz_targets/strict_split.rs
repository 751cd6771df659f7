#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| porch_fuzz::strict_split::run(data));

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| porch_fuzz::ipc_stream::run(data));

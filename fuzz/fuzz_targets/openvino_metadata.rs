#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lkd_fuzz::openvino_metadata(data));

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corecell::fuzz_entry::snapshot(data));

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corecell::fuzz_entry::bootnode_registry(data));

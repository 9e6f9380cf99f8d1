//! The model reference parser (`reference::ModelSource::parse`, `ModelRef::parse`): any text is an error or
//! a reference whose printed forms (full and familiar) parse back to the same reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_runner::digest::Digest;
use model_runner::reference::{ModelRef, ModelSource};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ModelSource::parse(text) {
        Ok(ModelSource::HuggingFace(hf)) => {
            let stored = hf.store_ref();
            let _ = stored.to_oci();
            let _ = stored.familiar();
        }
        Ok(ModelSource::Registry(_)) | Err(_) => {}
    }
    let Ok(reference) = ModelRef::parse(text) else {
        return;
    };
    let _ = reference.to_oci();
    let _ = reference.is_loopback_registry();
    let full = reference.to_string();
    assert_eq!(
        ModelRef::parse(&full).as_ref(),
        Ok(&reference),
        "the printed form {full:?} of {text:?} does not parse back"
    );
    let familiar = reference.familiar();
    assert_eq!(
        ModelRef::parse(&familiar).as_ref(),
        Ok(&reference),
        "the familiar form {familiar:?} of {text:?} does not parse back"
    );
    let pinned = reference.with_digest(Digest::of_bytes(data));
    let _ = pinned.to_oci();
    assert_eq!(pinned.without_digest().tag(), reference.tag());
});

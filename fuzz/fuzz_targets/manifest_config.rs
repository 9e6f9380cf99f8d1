//! The OCI manifest gate (`artifact::Manifest::parse_model`) and the config blob reader (`ConfigFile::parse`,
//! for each media type we accept) over arbitrary bytes. An accepted manifest must survive its own
//! serialisation (the store writes `to_json` and reads it back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_runner::artifact::{CNCF_CONFIG, CONFIG_V01, CONFIG_V02, ConfigFile, Manifest, human_size};

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::parse_model(data) {
        let _ = manifest.gguf_layers().count();
        let _ = manifest.chat_template_layer();
        for blob in manifest.blobs() {
            let _ = blob.title();
            let _ = human_size(blob.size);
        }
        let again = Manifest::parse_model(&manifest.to_json());
        assert!(again.is_ok(), "an accepted manifest does not re-parse: {again:?}");
    }
    for media_type in [CONFIG_V01, CONFIG_V02, CNCF_CONFIG] {
        if let Ok(config) = ConfigFile::parse(media_type, data) {
            let json = config.to_json();
            let again = ConfigFile::parse(CONFIG_V02, &json);
            assert!(again.is_ok(), "a config does not re-parse from its own JSON: {again:?}");
        }
    }
});

//! Request bodies: JSON parsed into the handler's typed request, the error naming the field at fault.

use axum::body::Bytes;

use super::errors::ApiError;

/// Parses a JSON body, naming the offending field in the error.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let param = (path != ".").then_some(path.as_str());
        ApiError::invalid(format!("invalid request body: {}", e.inner()), param)
    })
}

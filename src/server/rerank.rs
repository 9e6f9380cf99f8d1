//! Reranking with a model whose pooling is rank (a cross-encoder: ms-marco-MiniLM, bge-reranker-v2-m3; or
//! a decoder with a yes/no classifier: Qwen3-Reranker): `POST /v1/rerank` and `POST /rerank` in the shape
//! llama.cpp's server, Jina and Cohere share, and vLLM's `POST /v1/score`.
//!
//! Each query/document pair becomes one input as llama.cpp formats it (`Tokenizer::encode_pair`: for BERT
//! `[CLS] query [SEP] document`, for XLM-R `<s> query </s></s> document </s>`, for a file with a rerank
//! template that template filled), scored by the model's scheduler like an embedding. `/v1/rerank`
//! returns the first output as llama.cpp does: a cross-encoder's raw score, a decoder reranker's
//! probability of "yes"; `/v1/score` a probability: the sigmoid of a cross-encoder's score, as vLLM and
//! sentence-transformers' `CrossEncoder` give a one-label cross-encoder's, and a decoder's as it is.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::chat::ChatError;
use crate::runtime::LoadedModel;
use crate::server::AppState;
use crate::server::body::parse_body;
use crate::server::errors::ApiError;

/// Most documents (or pairs) one request may score.
pub const MAX_DOCUMENTS: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct RerankRequest {
    pub model: String,
    pub query: Value,
    pub documents: Value,
    pub top_n: Option<Value>,
    #[serde(default)]
    pub return_documents: bool,
}

#[derive(Debug, Deserialize)]
pub struct ScoreRequest {
    pub model: String,
    pub text_1: Value,
    pub text_2: Value,
}

/// A string, or a 400 naming `field`.
fn string(value: &Value, field: &str) -> Result<String, ApiError> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ApiError::invalid(format!("{field} must be a string"), Some(field)))
}

/// A non-empty array of at most `MAX_DOCUMENTS` strings, or a 400 naming the field or the element.
fn strings(value: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    let Some(items) = value.as_array() else {
        return Err(ApiError::invalid(
            format!("{field} must be an array of strings"),
            Some(field),
        ));
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            format!("{field} must not be empty"),
            Some(field),
        ));
    }
    if items.len() > MAX_DOCUMENTS {
        return Err(ApiError::invalid(
            format!(
                "{field} has {} entries, more than the limit of {MAX_DOCUMENTS}",
                items.len()
            ),
            Some(field),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| string(v, &format!("{field}[{i}]")))
        .collect()
}

/// The model, if it ranks; a 400 naming `model` otherwise.
async fn reranker(app: &AppState, name: &str) -> Result<Arc<LoadedModel>, ApiError> {
    let model = app.runtime.get(name).await?;
    if !model.ranks() {
        return Err(ApiError::invalid(
            format!(
                "model {} does not rerank (it serves {}): use a reranker, a model whose pooling type is rank",
                model.name,
                model.capabilities().join(", ")
            ),
            Some("model"),
        ));
    }
    Ok(model)
}

/// Scores each pair; the total of their tokens.
async fn score_pairs(
    model: &Arc<LoadedModel>,
    pairs: Vec<(String, String)>,
    field: &'static str,
) -> Result<(Vec<f32>, usize), ApiError> {
    let inputs = crate::chat::prompt::pairs(model, pairs, field).await?;
    let mut scores = Vec::with_capacity(inputs.len());
    let mut tokens = 0;
    for (i, ids) in inputs.into_iter().enumerate() {
        if ids.len() > model.context_size {
            return Err(ApiError::invalid(
                format!(
                    "{field}[{i}] with the query is {} tokens, more than the context size of {}",
                    ids.len(),
                    model.context_size
                ),
                Some(field),
            ));
        }
        tokens += ids.len();
        let output = model
            .scheduler
            .embed(ids)
            .await
            .map_err(|e| ApiError::from(ChatError::Generation(e)))?;
        let score = output
            .first()
            .copied()
            .ok_or_else(|| ApiError::internal("the reranker produced no score".to_string()))?;
        scores.push(score);
    }
    Ok((scores, tokens))
}

/// `top_n`: absent for all; an integer of at least 1 (at most `MAX_DOCUMENTS`), cut to the documents'
/// count as llama.cpp and Cohere do.
fn top_n(value: Option<&Value>, documents: usize) -> Result<usize, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(documents);
    };
    match value.as_u64() {
        Some(n) if n >= 1 && n as usize <= MAX_DOCUMENTS => Ok((n as usize).min(documents)),
        _ => Err(ApiError::invalid(
            format!("top_n must be an integer from 1 to {MAX_DOCUMENTS}"),
            Some("top_n"),
        )),
    }
}

/// `POST /v1/rerank`, `POST /rerank`.
pub async fn rerank(
    State(app): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: RerankRequest = parse_body(&body)?;
    let query = string(&request.query, "query")?;
    let documents = strings(&request.documents, "documents")?;
    let top_n = top_n(request.top_n.as_ref(), documents.len())?;
    let model = reranker(&app, &request.model).await?;
    let pairs = documents
        .iter()
        .map(|d| (query.clone(), d.clone()))
        .collect();
    let (scores, tokens) = score_pairs(&model, pairs, "documents").await?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b)));
    let results: Vec<Value> = order
        .into_iter()
        .take(top_n)
        .map(|i| {
            let mut result = json!({"index": i, "relevance_score": scores[i]});
            if request.return_documents {
                result["document"] = json!({"text": documents[i]});
            }
            result
        })
        .collect();
    Ok(Json(json!({
        "object": "list", "model": model.name, "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// `POST /v1/score`: `text_1` a string or list, `text_2` a string or list; one against many, or pairs
/// of two lists of the same length.
pub async fn score(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: ScoreRequest = parse_body(&body)?;
    let side = |value: &Value, field: &str| -> Result<Vec<String>, ApiError> {
        if value.is_string() {
            Ok(vec![string(value, field)?])
        } else {
            strings(value, field)
        }
    };
    let (first, second) = (
        side(&request.text_1, "text_1")?,
        side(&request.text_2, "text_2")?,
    );
    let pairs: Vec<(String, String)> = match (first.len(), second.len()) {
        (1, _) => second
            .iter()
            .map(|d| (first[0].clone(), d.clone()))
            .collect(),
        (n, m) if n == m => first.into_iter().zip(second).collect(),
        (n, m) => {
            return Err(ApiError::invalid(
                format!(
                    "text_1 has {n} texts and text_2 {m}: give one text_1, or as many as text_2"
                ),
                Some("text_2"),
            ));
        }
    };
    let model = reranker(&app, &request.model).await?;
    let (scores, tokens) = score_pairs(&model, pairs, "text_2").await?;
    // A decoder reranker's output is already a probability (its softmax over "yes" and "no").
    let probability = |s: f32| {
        if model.generates {
            s
        } else {
            1.0 / (1.0 + (-s).exp())
        }
    };
    let data: Vec<Value> = scores
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"index": i, "object": "score", "score": probability(*s)}))
        .collect();
    Ok(Json(json!({
        "id": super::openai::request_id("score"), "object": "list",
        "created": chrono::Utc::now().timestamp(), "model": model.name, "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_n_is_cut_to_the_documents_and_hostile_values_are_refused() {
        assert_eq!(top_n(None, 3).unwrap(), 3);
        assert_eq!(top_n(Some(&json!(2)), 3).unwrap(), 2);
        assert_eq!(top_n(Some(&json!(10)), 3).unwrap(), 3);
        for bad in [json!(0), json!(-1), json!(1.5), json!("2"), json!(u64::MAX)] {
            assert!(top_n(Some(&bad), 3).is_err(), "{bad}");
        }
    }

    #[test]
    fn documents_must_be_a_bounded_non_empty_list_of_strings() {
        assert_eq!(
            strings(&json!(["a", "b"]), "documents").unwrap(),
            ["a", "b"]
        );
        for bad in [
            json!([]),
            json!("a"),
            json!(["a", 1]),
            json!([{"text": "a"}]),
        ] {
            assert!(strings(&bad, "documents").is_err(), "{bad}");
        }
        let many = Value::Array(vec![json!("d"); MAX_DOCUMENTS + 1]);
        assert!(strings(&many, "documents").is_err());
    }
}

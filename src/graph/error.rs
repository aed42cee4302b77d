//! Graph errors: one type, rendered in one place as Graph's error JSON with
//! `innerError.request-id` and `date`.
//!
//! See <https://learn.microsoft.com/en-us/graph/errors>.

use serde_json::json;

/// A Graph error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphError {
    /// HTTP status.
    pub status: u16,
    /// `error.code`.
    pub code: &'static str,
    /// `error.message` (fixed or built from the request, never from internals).
    pub message: String,
}

impl GraphError {
    /// An error.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> GraphError {
        GraphError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 404 for an unknown or foreign item or folder (identical for both).
    pub fn not_found() -> GraphError {
        GraphError::new(
            404,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        )
    }

    /// 400 for an id that is no id.
    pub fn malformed() -> GraphError {
        GraphError::new(400, "ErrorInvalidIdMalformed", "Id is malformed.")
    }

    /// 403.
    pub fn denied() -> GraphError {
        GraphError::new(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        )
    }

    /// 400 for a path crmgate does not serve.
    pub fn segment(seg: &str) -> GraphError {
        GraphError::new(
            400,
            "BadRequest",
            format!("Resource not found for the segment '{seg}'."),
        )
    }

    /// 400 for a bad `$filter`.
    pub fn filter() -> GraphError {
        GraphError::new(
            400,
            "ErrorInvalidUrlQueryFilter",
            "The query filter contains one or more invalid nodes.",
        )
    }

    /// 400 for a bad request body or query.
    pub fn bad(message: impl Into<String>) -> GraphError {
        GraphError::new(400, "BadRequest", message)
    }

    /// 410 for an unknown, foreign or tampered delta token.
    pub fn sync_state() -> GraphError {
        GraphError::new(
            410,
            "syncStateNotFound",
            "The sync state generation is not found. Start a new sync.",
        )
    }

    /// 412.
    pub fn conflict() -> GraphError {
        GraphError::new(
            412,
            "ErrorIrresolvableConflict",
            "The change key passed in the request does not match the current change key for the item.",
        )
    }

    /// The JSON body.
    pub fn body(&self, request_id: &str, client_request_id: Option<&str>, date: &str) -> Vec<u8> {
        let mut inner = json!({"date": date, "request-id": request_id});
        if let Some(c) = client_request_id {
            inner["client-request-id"] = json!(c);
        }
        serde_json::to_vec(
            &json!({"error": {"code": self.code, "message": self.message, "innerError": inner}}),
        )
        .unwrap_or_default()
    }
}

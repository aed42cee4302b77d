//! EWS error codes, and the one place where view errors become them.

use crate::view::ViewError;

/// A per-message EWS error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EwsError {
    /// The `ResponseCode`.
    pub code: &'static str,
    /// The `MessageText` (fixed, safe to show).
    pub text: &'static str,
}

impl EwsError {
    /// An error with code and text.
    pub const fn new(code: &'static str, text: &'static str) -> EwsError {
        EwsError { code, text }
    }
}

/// Folder not found.
pub const FOLDER_NOT_FOUND: EwsError = EwsError::new(
    "ErrorFolderNotFound",
    "The specified folder could not be found in the store.",
);
/// Item not found.
pub const ITEM_NOT_FOUND: EwsError = EwsError::new(
    "ErrorItemNotFound",
    "The specified object was not found in the store.",
);
/// Malformed id.
pub const ID_MALFORMED: EwsError = EwsError::new("ErrorInvalidIdMalformed", "Id is malformed.");
/// Bad sync state.
pub const INVALID_SYNC_STATE: EwsError = EwsError::new(
    "ErrorInvalidSyncStateData",
    "Synchronization state data is corrupt or otherwise invalid.",
);
/// Write refused.
pub const ACCESS_DENIED: EwsError = EwsError::new(
    "ErrorAccessDenied",
    "Access is denied. Check credentials and try again.",
);
/// Impersonation refused.
pub const IMPERSONATE_DENIED: EwsError = EwsError::new(
    "ErrorImpersonateUserDenied",
    "The account does not have permission to impersonate the requested user.",
);
/// Unknown mailbox.
pub const NON_EXISTENT_MAILBOX: EwsError =
    EwsError::new("ErrorNonExistentMailbox", "No mailbox with such guid.");
/// No name matched.
pub const NAME_NO_RESULTS: EwsError =
    EwsError::new("ErrorNameResolutionNoResults", "No results were found.");
/// An id named twice in one request: answered once, the repeats get this.
pub const DUPLICATE_ID: EwsError = EwsError::new(
    "ErrorInvalidRequest",
    "This id appears earlier in the same request; it is answered there.",
);
/// Paging parameters out of range.
pub const BAD_PAGING: EwsError = EwsError::new(
    "ErrorInvalidIndexedPagingParameters",
    "The paging parameters are out of range.",
);

/// Stale change key with a real conflict.
pub const IRRESOLVABLE_CONFLICT: EwsError = EwsError::new(
    "ErrorIrresolvableConflict",
    "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
);
/// A value the CRM cannot store.
pub const INVALID_VALUE: EwsError = EwsError::new(
    "ErrorInvalidValueForProperty",
    "A value is invalid for its property.",
);
/// A write to a read-only field.
pub const READ_ONLY_PROPERTY: EwsError = EwsError::new(
    "ErrorInvalidPropertySet",
    "A read-only property cannot be set.",
);
/// The response code of a value the CRM refused (the text names the field).
pub const INVALID_PROPERTY_SET_CODE: &str = "ErrorInvalidPropertySet";
/// The CRM is down or throttling.
pub const SERVER_BUSY: EwsError = EwsError::new(
    "ErrorServerBusy",
    "The server cannot service this request right now. Try again later.",
);
/// Anything else.
pub const INTERNAL: EwsError = EwsError::new(
    "ErrorInternalServerError",
    "An internal server error occurred. The operation failed.",
);

/// Maps a view error (the single mapping site for the EWS face).
pub fn from_view(e: &ViewError, item: bool) -> EwsError {
    match e {
        ViewError::Malformed => ID_MALFORMED,
        ViewError::FolderNotFound => FOLDER_NOT_FOUND,
        ViewError::ItemNotFound if item => ITEM_NOT_FOUND,
        ViewError::ItemNotFound => FOLDER_NOT_FOUND,
        ViewError::InvalidSyncState => INVALID_SYNC_STATE,
    }
}

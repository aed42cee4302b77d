//! The bounded XML reader and writer (`crate::xml`), with the namespaces of EWS.

pub use crate::xml::*;

/// SOAP 1.1 envelope namespace.
pub const NS_SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// EWS messages namespace.
pub const NS_M: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
/// EWS types namespace.
pub const NS_T: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
/// EWS errors namespace.
pub const NS_E: &str = "http://schemas.microsoft.com/exchange/services/2006/errors";

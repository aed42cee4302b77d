//! The SOAP envelope: reading the request's header and body operation, and writing response
//! envelopes (always with `ServerVersionInfo`) and faults.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/ews-xml-elements-in-exchange>.

use super::xml::{Element, Xml, NS_E, NS_M, NS_SOAP, NS_T};

/// The parsed request.
#[derive(Debug)]
pub struct Request {
    /// The operation element (child of `Body`).
    pub op: Element,
    /// SMTP address in `ExchangeImpersonation`, if any.
    pub impersonate: Option<String>,
}

/// Why the envelope could not be used: answered with a SOAP fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Response code (`ErrorSchemaValidation`, …).
    pub code: &'static str,
    /// Message.
    pub message: String,
}

/// Extracts the operation and the headers crmgate honours; all other headers are accepted
/// and ignored (RequestServerVersion, TimeZoneContext, …).
pub fn read(root: Element) -> Result<Request, Fault> {
    let schema = |m: &str| Fault {
        code: "ErrorSchemaValidation",
        message: m.to_owned(),
    };
    if !root.is(NS_SOAP, "Envelope") {
        return Err(schema("The request is not a SOAP 1.1 envelope."));
    }
    let mut impersonate = None;
    let mut body = None;
    for c in root.children {
        if c.is(NS_SOAP, "Header") {
            for h in &c.children {
                if h.is(NS_T, "ExchangeImpersonation") {
                    let sid = h.child("ConnectingSID");
                    impersonate = sid
                        .and_then(|s| {
                            s.child_text("PrimarySmtpAddress")
                                .or_else(|| s.child_text("SmtpAddress"))
                                .or_else(|| s.child_text("PrincipalName"))
                        })
                        .map(|s| s.trim().to_owned());
                }
            }
        } else if c.is(NS_SOAP, "Body") {
            body = Some(c);
        }
    }
    let body = body.ok_or_else(|| schema("The SOAP envelope has no Body."))?;
    let op = body
        .children
        .into_iter()
        .next()
        .ok_or_else(|| schema("The SOAP Body is empty."))?;
    if &*op.ns != NS_M {
        return Err(schema(
            "The request operation is not in the EWS messages namespace.",
        ));
    }
    Ok(Request { op, impersonate })
}

/// Opens a response envelope up to the body.
pub fn open(x: &mut Xml) {
    x.open("s:Envelope", &[("xmlns:s", NS_SOAP)]);
    x.open("s:Header", &[]);
    x.empty(
        "h:ServerVersionInfo",
        &[
            ("MajorVersion", "15"),
            ("MinorVersion", "1"),
            ("MajorBuildNumber", "2507"),
            ("MinorBuildNumber", "6"),
            ("Version", "V2017_07_11"),
            ("xmlns:h", NS_T),
            ("xmlns", NS_T),
        ],
    );
    x.close("s:Header");
    x.open("s:Body", &[]);
}

/// Closes what [`open`] opened.
pub fn close(x: &mut Xml) {
    x.close("s:Body");
    x.close("s:Envelope");
}

/// A whole fault envelope.
pub fn fault(f: &Fault) -> Vec<u8> {
    fault_with(f, None)
}

/// An `ErrorServerBusy` fault that tells the client how long to back off, in the
/// `MessageXml` detail where Exchange puts it (exchangelib reads `BackOffMilliseconds`).
pub fn busy_fault(message: &str, back_off_ms: u64) -> Vec<u8> {
    let f = Fault {
        code: "ErrorServerBusy",
        message: message.to_owned(),
    };
    fault_with(&f, Some(back_off_ms))
}

fn fault_with(f: &Fault, back_off_ms: Option<u64>) -> Vec<u8> {
    let mut x = Xml::new();
    open(&mut x);
    x.open("s:Fault", &[]);
    x.text("faultcode", &[("xmlns:a", NS_T)], &format!("a:{}", f.code));
    x.text("faultstring", &[("xml:lang", "en-US")], &f.message);
    x.open("detail", &[]);
    x.text("e:ResponseCode", &[("xmlns:e", NS_E)], f.code);
    x.text("e:Message", &[("xmlns:e", NS_E)], &f.message);
    if let Some(ms) = back_off_ms {
        x.open("e:MessageXml", &[("xmlns:e", NS_E)]);
        x.text(
            "t:Value",
            &[("xmlns:t", NS_T), ("Name", "BackOffMilliseconds")],
            &ms.to_string(),
        );
        x.close("e:MessageXml");
    }
    x.close("detail");
    x.close("s:Fault");
    close(&mut x);
    x.finish()
}

/// Writes a per-message error inside an `<op>ResponseMessage`.
pub fn error_message(x: &mut Xml, tag: &str, e: &super::error::EwsError) {
    error_message_with(x, tag, e, |_| {});
}

/// Like [`error_message`], with a text made for this message (it names what was refused).
pub fn error_message_text(x: &mut Xml, tag: &str, code: &str, text: &str) {
    x.open(tag, &[("ResponseClass", "Error")]);
    x.text("m:MessageText", &[], text);
    x.text("m:ResponseCode", &[], code);
    x.text("m:DescriptiveLinkKey", &[], "0");
    x.close(tag);
}

/// Like [`error_message`], with elements the operation's clients expect even on errors
/// (sync operations: an empty `SyncState` and `IncludesLast…InRange`, which exchangelib reads
/// before it looks at the response class).
pub fn error_message_with(
    x: &mut Xml,
    tag: &str,
    e: &super::error::EwsError,
    extra: impl FnOnce(&mut Xml),
) {
    x.open(tag, &[("ResponseClass", "Error")]);
    x.text("m:MessageText", &[], e.text);
    x.text("m:ResponseCode", &[], e.code);
    x.text("m:DescriptiveLinkKey", &[], "0");
    extra(x);
    x.close(tag);
}

/// Opens `<m:{op}Response><m:ResponseMessages>`.
pub fn open_response(x: &mut Xml, op: &str) {
    x.open(
        &format!("m:{op}Response"),
        &[("xmlns:m", NS_M), ("xmlns:t", NS_T)],
    );
    x.open("m:ResponseMessages", &[]);
}

/// Closes what [`open_response`] opened.
pub fn close_response(x: &mut Xml, op: &str) {
    x.close("m:ResponseMessages");
    x.close(&format!("m:{op}Response"));
}

/// Opens a successful `<m:{op}ResponseMessage>` with `NoError`.
pub fn open_success(x: &mut Xml, tag: &str) {
    x.open(tag, &[("ResponseClass", "Success")]);
    x.text("m:ResponseCode", &[], "NoError");
}

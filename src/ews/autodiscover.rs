//! Autodiscover: SOAP `GetUserSettings` at `/autodiscover/autodiscover.svc` (exchangelib) and
//! POX at `/autodiscover/autodiscover.xml` (Outlook, ews-javascript-api). Both tell the client
//! the EWS URL of this server.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/getusersettings-operation-soap>.

use super::xml::{self, Element, Xml};

const NS_A: &str = "http://schemas.microsoft.com/exchange/2010/Autodiscover";
const NS_WSA: &str = "http://www.w3.org/2005/08/addressing";
const NS_POX_RESP: &str = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006";
const NS_OUTLOOK: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";

/// What the server knows to answer with.
pub struct Discovered<'a> {
    /// The user's SMTP address (login).
    pub smtp: &'a str,
    /// The user's display name.
    pub name: &'a str,
    /// Absolute EWS URL.
    pub ews_url: &'a str,
}

/// Answers a SOAP GetUserSettings request.
pub fn soap(req: &Element, d: &Discovered<'_>) -> Vec<u8> {
    let requested: Vec<String> = req
        .path(&[
            "Body",
            "GetUserSettingsRequestMessage",
            "Request",
            "RequestedSettings",
        ])
        .map(|r| {
            r.children_named("Setting")
                .map(|s| s.text.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let mailbox = req
        .path(&[
            "Body",
            "GetUserSettingsRequestMessage",
            "Request",
            "Users",
            "User",
            "Mailbox",
        ])
        .map(|m| m.text.trim().to_owned())
        .unwrap_or_else(|| d.smtp.to_owned());
    let mut x = Xml::new();
    x.open(
        "s:Envelope",
        &[("xmlns:s", xml::NS_SOAP), ("xmlns:a", NS_WSA)],
    );
    x.open("s:Header", &[]);
    x.text(
        "a:Action",
        &[("s:mustUnderstand", "1")],
        "http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/GetUserSettingsResponse",
    );
    x.open(
        "h:ServerVersionInfo",
        &[
            ("xmlns:h", NS_A),
            ("xmlns:i", "http://www.w3.org/2001/XMLSchema-instance"),
        ],
    );
    x.text("h:MajorVersion", &[], "15");
    x.text("h:MinorVersion", &[], "1");
    x.text("h:MajorBuildNumber", &[], "2507");
    x.text("h:MinorBuildNumber", &[], "6");
    x.text("h:Version", &[], "Exchange2016");
    x.close("h:ServerVersionInfo");
    x.close("s:Header");
    x.open("s:Body", &[]);
    x.open("GetUserSettingsResponseMessage", &[("xmlns", NS_A)]);
    x.open(
        "Response",
        &[("xmlns:i", "http://www.w3.org/2001/XMLSchema-instance")],
    );
    x.text("ErrorCode", &[], "NoError");
    x.text("ErrorMessage", &[], "");
    x.open("UserResponses", &[]);
    x.open("UserResponse", &[]);
    x.text("ErrorCode", &[], "NoError");
    x.text("ErrorMessage", &[], "No error.");
    x.empty("RedirectTarget", &[("i:nil", "true")]);
    x.open("UserSettingErrors", &[]);
    x.close("UserSettingErrors");
    x.open("UserSettings", &[]);
    let all = [
        ("ExternalEwsUrl", d.ews_url.to_owned()),
        ("InternalEwsUrl", d.ews_url.to_owned()),
        ("EwsSupportedSchemas", "Exchange2007, Exchange2007_SP1, Exchange2010, Exchange2010_SP1, Exchange2010_SP2, Exchange2013, Exchange2013_SP1, Exchange2016".to_owned()),
        ("UserDisplayName", d.name.to_owned()),
        ("AutoDiscoverSMTPAddress", d.smtp.to_owned()),
        ("UserDN", mailbox.clone()),
    ];
    for (name, value) in all {
        if requested.is_empty() || requested.iter().any(|r| r == name) {
            x.open("UserSetting", &[("i:type", "StringSetting")]);
            x.text("Name", &[], name);
            x.text("Value", &[], &value);
            x.close("UserSetting");
        }
    }
    x.close("UserSettings");
    x.close("UserResponse");
    x.close("UserResponses");
    x.close("Response");
    x.close("GetUserSettingsResponseMessage");
    x.close("s:Body");
    x.close("s:Envelope");
    x.finish()
}

/// Answers a POX autodiscover request.
pub fn pox(d: &Discovered<'_>) -> Vec<u8> {
    let mut x = Xml::new();
    x.open("Autodiscover", &[("xmlns", NS_POX_RESP)]);
    x.open("Response", &[("xmlns", NS_OUTLOOK)]);
    x.open("User", &[]);
    x.text("DisplayName", &[], d.name);
    x.text("AutoDiscoverSMTPAddress", &[], d.smtp);
    x.close("User");
    x.open("Account", &[]);
    x.text("AccountType", &[], "email");
    x.text("Action", &[], "settings");
    for proto in ["EXCH", "EXPR"] {
        x.open("Protocol", &[]);
        x.text("Type", &[], proto);
        x.text("EwsUrl", &[], d.ews_url);
        x.text("ASUrl", &[], d.ews_url);
        x.close("Protocol");
    }
    x.close("Account");
    x.close("Response");
    x.close("Autodiscover");
    x.finish()
}

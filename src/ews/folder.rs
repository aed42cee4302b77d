//! Folders rendered as `t:ContactsFolder`, `t:CalendarFolder`, `t:TasksFolder` or `t:Folder`,
//! in the element order of types.xsd, for any shape; and folder property values for
//! restrictions.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/contactsfolder>.

use super::contact::write_rights;
use super::shape::{system_time, BaseShape, ExtKey, Path, Shape};
use super::xml::Xml;
use crate::view::{FolderInfo, FolderKind};

/// Folder time values (etag / ctag as SystemTime): a fixed epoch plus the folder's change
/// counter, so the value moves with every change and is always a well-formed time.
fn ctag_time(ctag: u64) -> String {
    system_time(946_684_800 + ctag)
}

fn extended(f: &FolderInfo, ctag: u64, key: &ExtKey) -> Option<String> {
    let ExtKey::Tag(t) = key else { return None };
    Some(match *t {
        0x3613 => super::folders::class(f).to_owned(),
        0x3602 => f.total.to_string(),
        0x3603 => "0".into(),
        0x360a => (f.child_count > 0).to_string(),
        0x3008 | 0x670a => ctag_time(ctag),
        0x6751 | 0x6752 => "0".into(),
        0x3001 | 0x10f3 => f.display_name.clone(),
        _ => return None,
    })
}

/// The values of a folder property path (for FindFolder restrictions).
pub fn values(f: &FolderInfo, p: &Path) -> Vec<String> {
    match p {
        Path::Field(u) => match u.as_str() {
            "folder:DisplayName" => vec![f.display_name.clone()],
            "folder:FolderClass" => vec![super::folders::class(f).to_owned()],
            "folder:TotalCount" => vec![f.total.to_string()],
            "folder:ChildFolderCount" => vec![f.child_count.to_string()],
            _ => Vec::new(),
        },
        Path::Extended(x) => extended(f, 0, &x.key).into_iter().collect(),
        Path::Indexed(..) => Vec::new(),
    }
}

/// Writes one folder.
pub fn write(x: &mut Xml, f: &FolderInfo, ctag: u64, shape: &Shape) {
    let tag = match f.kind {
        FolderKind::Contacts => "t:ContactsFolder",
        FolderKind::Calendar => "t:CalendarFolder",
        FolderKind::Tasks => "t:TasksFolder",
        FolderKind::Generic => "t:Folder",
    };
    let want = |uri: &str, d: bool| shape.field(uri, d, true);
    x.open(tag, &[]);
    x.empty("t:FolderId", &[("Id", &f.id), ("ChangeKey", &f.change_key)]);
    if want("folder:ParentFolderId", false) {
        if let Some((_, pid)) = &f.parent {
            x.empty("t:ParentFolderId", &[("Id", pid)]);
        }
    }
    let class = super::folders::class(f);
    if want("folder:FolderClass", false) && !class.is_empty() {
        x.text("t:FolderClass", &[], class);
    }
    if want("folder:DisplayName", true) {
        x.text("t:DisplayName", &[], &f.display_name);
    }
    if want("folder:TotalCount", true) {
        x.text("t:TotalCount", &[], &f.total.to_string());
    }
    if want("folder:ChildFolderCount", true) {
        x.text("t:ChildFolderCount", &[], &f.child_count.to_string());
    }
    for e in shape.extended() {
        if let Some(v) = extended(f, ctag, &e.key) {
            x.open("t:ExtendedProperty", &[]);
            let attrs: Vec<(&str, &str)> = e
                .attrs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            x.empty("t:ExtendedFieldURI", &attrs);
            x.text("t:Value", &[], &v);
            x.close("t:ExtendedProperty");
        }
    }
    if want("folder:EffectiveRights", false) {
        write_rights(x, f.writable, true);
    }
    if want("folder:DistinguishedFolderId", false) || shape.base == BaseShape::AllProperties {
        if let Some(d) = f.distinguished {
            x.text("t:DistinguishedFolderId", &[], d);
        }
    }
    if tag == "t:Folder" && want("folder:UnreadCount", true) {
        x.text("t:UnreadCount", &[], "0");
    }
    x.close(tag);
}

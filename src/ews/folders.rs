//! The Exchange folder tree around crmgate's folders: the distinguished folders exchangelib,
//! DavMail and Outlook for Mac ask for (always empty, read-only), the folder classes (IPF)
//! EWS shows, and their kinds. The view hosts the table (`ViewConfig::face_folders`) and
//! knows nothing of Exchange; each entry's code is part of the folder ids clients hold.

use crate::view::{ExtraFolder, FolderInfo, FolderKind, FolderRef};

/// The root of an Exchange mailbox (its folder code in ids, released: never changes).
pub const ROOT: u8 = 1;
/// The message folder root ("Top of Information Store"), parent of the default Contacts
/// folder.
pub const MSG_FOLDER_ROOT: u8 = 2;

const fn wk(
    code: u8,
    name: &'static str,
    display: &'static str,
    class: &'static str,
    kind: FolderKind,
    parent: Option<u8>,
) -> ExtraFolder {
    ExtraFolder {
        code,
        name,
        display,
        class,
        kind,
        parent,
    }
}

/// The Exchange folder tree the EWS face adds around crmgate's folders: the root, the
/// message folder root (the default Contacts folder's parent) and every distinguished
/// folder clients ask for. Codes are part of released folder ids: never change one.
pub static WELL_KNOWN: &[ExtraFolder] = &[
    wk(ROOT, "root", "Root", "", FolderKind::Generic, None),
    wk(
        MSG_FOLDER_ROOT,
        "msgfolderroot",
        "Top of Information Store",
        "IPF.Note",
        FolderKind::Generic,
        Some(ROOT),
    ),
    wk(
        16,
        "inbox",
        "Inbox",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        17,
        "calendar",
        "Calendar",
        "IPF.Appointment",
        FolderKind::Calendar,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        18,
        "sentitems",
        "Sent Items",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        19,
        "drafts",
        "Drafts",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        20,
        "deleteditems",
        "Deleted Items",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        21,
        "junkemail",
        "Junk Email",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        22,
        "outbox",
        "Outbox",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        23,
        "tasks",
        "Tasks",
        "IPF.Task",
        FolderKind::Tasks,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        24,
        "notes",
        "Notes",
        "IPF.StickyNote",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        25,
        "journal",
        "Journal",
        "IPF.Journal",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        26,
        "conflicts",
        "Conflicts",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        27,
        "conversationhistory",
        "Conversation History",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        28,
        "localfailures",
        "Local Failures",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        29,
        "serverfailures",
        "Server Failures",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        30,
        "syncissues",
        "Sync Issues",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        31,
        "archive",
        "Archive",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        32,
        "voicemail",
        "Voice Mail",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        33,
        "favorites",
        "Favorites",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        34,
        "todosearch",
        "To-Do Search",
        "IPF.Task",
        FolderKind::Tasks,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        35,
        "searchfolders",
        "Finder",
        "",
        FolderKind::Generic,
        Some(ROOT),
    ),
    wk(
        36,
        "directory",
        "Directory",
        "",
        FolderKind::Generic,
        Some(ROOT),
    ),
    wk(
        37,
        "recipientcache",
        "Recipient Cache",
        "IPF.Contact.RecipientCache",
        FolderKind::Contacts,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        38,
        "quickcontacts",
        "Quick Contacts",
        "IPF.Contact.MOC.QuickContacts",
        FolderKind::Contacts,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        39,
        "imcontactlist",
        "IM Contact List",
        "IPF.Contact.MOC.ImContactList",
        FolderKind::Contacts,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        40,
        "peopleconnect",
        "PeopleConnect",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        41,
        "mycontacts",
        "My Contacts",
        "IPF.Note",
        FolderKind::Generic,
        Some(MSG_FOLDER_ROOT),
    ),
    wk(
        42,
        "recoverableitemsroot",
        "Recoverable Items",
        "",
        FolderKind::Generic,
        Some(ROOT),
    ),
    wk(
        43,
        "recoverableitemsdeletions",
        "Deletions",
        "",
        FolderKind::Generic,
        Some(ROOT),
    ),
    wk(
        44,
        "recoverableitemspurges",
        "Purges",
        "",
        FolderKind::Generic,
        Some(ROOT),
    ),
    wk(
        45,
        "recoverableitemsversions",
        "Versions",
        "",
        FolderKind::Generic,
        Some(ROOT),
    ),
];

/// The IPF folder class EWS shows for a folder.
pub fn class(f: &FolderInfo) -> &'static str {
    match f.folder {
        FolderRef::Contacts | FolderRef::Virtual(_) => "IPF.Contact",
        FolderRef::Face(_) => f.class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder's id carries its code: the released codes must never change.
    #[test]
    fn the_table_keeps_the_released_codes() {
        let by_code = |c: u8| WELL_KNOWN.iter().find(|w| w.code == c).map(|w| w.name);
        assert_eq!(by_code(ROOT), Some("root"));
        assert_eq!(by_code(MSG_FOLDER_ROOT), Some("msgfolderroot"));
        let mut codes: Vec<u8> = WELL_KNOWN.iter().map(|w| w.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), WELL_KNOWN.len(), "codes are unique");
        assert!(
            WELL_KNOWN.iter().all(|w| !(3..=5).contains(&w.code)),
            "3, 4, 5 are the view's own folders"
        );
        let names: Vec<&str> = (16..16 + WELL_KNOWN.len() as u8 - 2)
            .filter_map(by_code)
            .collect();
        assert_eq!(
            names,
            [
                "inbox",
                "calendar",
                "sentitems",
                "drafts",
                "deleteditems",
                "junkemail",
                "outbox",
                "tasks",
                "notes",
                "journal",
                "conflicts",
                "conversationhistory",
                "localfailures",
                "serverfailures",
                "syncissues",
                "archive",
                "voicemail",
                "favorites",
                "todosearch",
                "searchfolders",
                "directory",
                "recipientcache",
                "quickcontacts",
                "imcontactlist",
                "peopleconnect",
                "mycontacts",
                "recoverableitemsroot",
                "recoverableitemsdeletions",
                "recoverableitemspurges",
                "recoverableitemsversions",
            ]
        );
        let recipients = WELL_KNOWN.iter().find(|w| w.name == "recipientcache");
        assert_eq!(
            recipients.map(|w| (w.code, w.class, w.kind)),
            Some((37, "IPF.Contact.RecipientCache", FolderKind::Contacts))
        );
    }
}

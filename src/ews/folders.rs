//! The Exchange folder tree around crmgate's folders: the distinguished folders exchangelib,
//! DavMail and Outlook for Mac ask for (always empty, read-only), the folder classes (IPF)
//! EWS shows, and their kinds. The view hosts the table (`ViewConfig::extra_folders`); its
//! order is part of the folder ids clients hold, so entries are only ever appended.

use crate::view::{ExtraFolder, FolderInfo, FolderKind, FolderRef};

const fn wk(
    name: &'static str,
    display: &'static str,
    class: &'static str,
    kind: FolderKind,
    under_root: bool,
) -> ExtraFolder {
    ExtraFolder {
        name,
        display,
        class,
        kind,
        under_root,
    }
}

/// Every distinguished folder the EWS face adds, in id order.
pub static WELL_KNOWN: &[ExtraFolder] = &[
    wk("inbox", "Inbox", "IPF.Note", FolderKind::Generic, false),
    wk(
        "calendar",
        "Calendar",
        "IPF.Appointment",
        FolderKind::Calendar,
        false,
    ),
    wk(
        "sentitems",
        "Sent Items",
        "IPF.Note",
        FolderKind::Generic,
        false,
    ),
    wk("drafts", "Drafts", "IPF.Note", FolderKind::Generic, false),
    wk(
        "deleteditems",
        "Deleted Items",
        "IPF.Note",
        FolderKind::Generic,
        false,
    ),
    wk(
        "junkemail",
        "Junk Email",
        "IPF.Note",
        FolderKind::Generic,
        false,
    ),
    wk("outbox", "Outbox", "IPF.Note", FolderKind::Generic, false),
    wk("tasks", "Tasks", "IPF.Task", FolderKind::Tasks, false),
    wk(
        "notes",
        "Notes",
        "IPF.StickyNote",
        FolderKind::Generic,
        false,
    ),
    wk(
        "journal",
        "Journal",
        "IPF.Journal",
        FolderKind::Generic,
        false,
    ),
    wk(
        "conflicts",
        "Conflicts",
        "IPF.Note",
        FolderKind::Generic,
        false,
    ),
    wk(
        "conversationhistory",
        "Conversation History",
        "IPF.Note",
        FolderKind::Generic,
        false,
    ),
    wk(
        "localfailures",
        "Local Failures",
        "IPF.Note",
        FolderKind::Generic,
        false,
    ),
    wk(
        "serverfailures",
        "Server Failures",
        "IPF.Note",
        FolderKind::Generic,
        false,
    ),
    wk(
        "syncissues",
        "Sync Issues",
        "IPF.Note",
        FolderKind::Generic,
        false,
    ),
    wk("archive", "Archive", "IPF.Note", FolderKind::Generic, false),
    wk(
        "voicemail",
        "Voice Mail",
        "IPF.Note",
        FolderKind::Generic,
        false,
    ),
    wk(
        "favorites",
        "Favorites",
        "IPF.Note",
        FolderKind::Generic,
        false,
    ),
    wk(
        "todosearch",
        "To-Do Search",
        "IPF.Task",
        FolderKind::Tasks,
        false,
    ),
    wk("searchfolders", "Finder", "", FolderKind::Generic, true),
    wk("directory", "Directory", "", FolderKind::Generic, true),
    wk(
        "recipientcache",
        "Recipient Cache",
        "IPF.Contact.RecipientCache",
        FolderKind::Contacts,
        false,
    ),
    wk(
        "quickcontacts",
        "Quick Contacts",
        "IPF.Contact.MOC.QuickContacts",
        FolderKind::Contacts,
        false,
    ),
    wk(
        "imcontactlist",
        "IM Contact List",
        "IPF.Contact.MOC.ImContactList",
        FolderKind::Contacts,
        false,
    ),
    wk(
        "peopleconnect",
        "PeopleConnect",
        "IPF.Note",
        FolderKind::Generic,
        false,
    ),
    wk(
        "mycontacts",
        "My Contacts",
        "IPF.Note",
        FolderKind::Generic,
        false,
    ),
    wk(
        "recoverableitemsroot",
        "Recoverable Items",
        "",
        FolderKind::Generic,
        true,
    ),
    wk(
        "recoverableitemsdeletions",
        "Deletions",
        "",
        FolderKind::Generic,
        true,
    ),
    wk(
        "recoverableitemspurges",
        "Purges",
        "",
        FolderKind::Generic,
        true,
    ),
    wk(
        "recoverableitemsversions",
        "Versions",
        "",
        FolderKind::Generic,
        true,
    ),
];

/// The IPF folder class EWS shows for a folder.
pub fn class(f: &FolderInfo) -> &'static str {
    match f.folder {
        FolderRef::Root => "",
        FolderRef::MsgFolderRoot => "IPF.Note",
        FolderRef::Contacts | FolderRef::Virtual(_) => "IPF.Contact",
        FolderRef::Extra(_) => f.class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder's id carries its index in the table: the released order must never change.
    #[test]
    fn the_table_keeps_the_released_order() {
        let names: Vec<&str> = WELL_KNOWN.iter().map(|w| w.name).collect();
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
        let recipients = &WELL_KNOWN[names
            .iter()
            .position(|n| *n == "recipientcache")
            .unwrap_or(0)];
        assert_eq!(
            (recipients.class, recipients.kind),
            ("IPF.Contact.RecipientCache", FolderKind::Contacts)
        );
    }
}

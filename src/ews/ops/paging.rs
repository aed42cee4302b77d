//! `IndexedPageItemView` / `IndexedPageFolderView`: offset paging with the counts clients
//! depend on (`IndexedPagingOffset`, `TotalItemsInView`, `IncludesLastItemInRange`).

use crate::ews::error::{EwsError, BAD_PAGING};
use crate::ews::xml::Element;

/// Largest page served, whatever a client asks for.
pub const MAX_PAGE: usize = 1000;

/// A computed page.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    /// Index of the first item.
    pub start: usize,
    /// Items in the page.
    pub len: usize,
    /// Items in the view.
    pub total: usize,
    /// Offset for the next page.
    pub next_offset: usize,
    /// The page reaches the end of the view.
    pub last: bool,
}

/// Opens `m:RootFolder` with the paging attributes of `pg`, then the `inner` container.
pub fn open_root(x: &mut crate::ews::xml::Xml, pg: &Page, inner: &str) {
    let (next, total) = (pg.next_offset.to_string(), pg.total.to_string());
    x.open(
        "m:RootFolder",
        &[
            ("IndexedPagingOffset", &next),
            ("TotalItemsInView", &total),
            (
                "IncludesLastItemInRange",
                if pg.last { "true" } else { "false" },
            ),
        ],
    );
    x.open(inner, &[]);
}

/// Closes what [`open_root`] opened.
pub fn close_root(x: &mut crate::ews::xml::Xml, inner: &str) {
    x.close(inner);
    x.close("m:RootFolder");
}

/// Computes the page of a view with `total` items.
pub fn page(view: Option<&Element>, total: usize) -> Result<Page, EwsError> {
    let Some(v) = view else {
        let len = total.min(MAX_PAGE);
        return Ok(Page {
            start: 0,
            len,
            total,
            next_offset: len,
            last: len == total,
        });
    };
    let num = |name: &str, default: usize| -> Result<usize, EwsError> {
        match v.attr(name) {
            None => Ok(default),
            Some(s) => s.trim().parse::<usize>().map_err(|_| BAD_PAGING),
        }
    };
    let max = num("MaxEntriesReturned", MAX_PAGE)?;
    if max == 0 {
        return Err(BAD_PAGING);
    }
    let max = max.min(MAX_PAGE);
    let offset = num("Offset", 0)?;
    let from_end = v.attr("BasePoint") == Some("End");
    let (start, end) = if from_end {
        let end = total.saturating_sub(offset);
        (end.saturating_sub(max), end)
    } else {
        let start = offset.min(total);
        (start, (start + max).min(total))
    };
    let len = end - start;
    let (next_offset, last) = if from_end {
        (offset + len, start == 0)
    } else {
        (end, end == total)
    };
    Ok(Page {
        start,
        len,
        total,
        next_offset,
        last,
    })
}

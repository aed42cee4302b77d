//! The one query every face runs over a folder: a filter, a sort, and the ordered matches the
//! face pages through. The faces only translate their syntax (EWS restrictions, OData
//! `$filter`/`$orderby`, CardDAV `addressbook-query`) into a [`Filter`] over their own
//! property names and say, through [`Props`], how those names reach the view's data; how a
//! query runs — index lookups for equalities on identifying properties, the view's kept
//! sorted listings, cards built only when a value needs them, the work paid for before it is
//! done — is decided here, once.

use super::{ContactKey, Item, Mailbox, OrderKey};
use crate::domain::rules::VirtualFolder;
use std::cmp::Ordering;
use std::sync::Arc;

/// A filter over a face's properties `P`.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter<P> {
    /// All must hold.
    And(Vec<Filter<P>>),
    /// One must hold.
    Or(Vec<Filter<P>>),
    /// Must not hold.
    Not(Box<Filter<P>>),
    /// Some value compares so with the constant (numbers as numbers, text case-insensitively);
    /// `Ne`: no value equals it.
    Compare(P, Cmp, String),
    /// Some value matches the text.
    Text {
        /// Property.
        prop: P,
        /// The text.
        value: String,
        /// Where in the value.
        mode: TextMatch,
        /// Case-insensitive.
        ignore_case: bool,
    },
    /// The property has a value.
    Exists(P),
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Greater.
    Gt,
    /// Greater or equal.
    Ge,
    /// Less.
    Lt,
    /// Less or equal.
    Le,
}

/// Where a text must occur in a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextMatch {
    /// The whole value.
    Equals,
    /// At its start.
    Prefix,
    /// At its end.
    Suffix,
    /// Anywhere.
    Substring,
    /// At the start of the value or of one of its words.
    PrefixOnWords,
}

/// Compares two values as filters and sorts do: as integers when both are, else as text
/// without regard to case.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.to_lowercase().cmp(&b.to_lowercase()),
    }
}

/// Compares two value lists the way a sort key orders them (by the first value; none first).
pub fn cmp_values(a: &[String], b: &[String]) -> Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) => compare(x, y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

impl<P> Filter<P> {
    /// Nodes in the tree: what testing one contact against it costs, at most.
    pub fn nodes(&self) -> usize {
        match self {
            Filter::And(v) | Filter::Or(v) => 1 + v.iter().map(Self::nodes).sum::<usize>(),
            Filter::Not(r) => 1 + r.nodes(),
            _ => 1,
        }
    }

    /// Whether values given by `values` match.
    pub fn matches(&self, values: &dyn Fn(&P) -> Vec<String>) -> bool {
        match self {
            Filter::And(v) => v.iter().all(|r| r.matches(values)),
            Filter::Or(v) => v.iter().any(|r| r.matches(values)),
            Filter::Not(r) => !r.matches(values),
            Filter::Exists(p) => !values(p).is_empty(),
            Filter::Compare(p, op, c) => {
                let vs = values(p);
                match op {
                    Cmp::Eq => vs.iter().any(|v| compare(v, c) == Ordering::Equal),
                    Cmp::Ne => vs.iter().all(|v| compare(v, c) != Ordering::Equal),
                    Cmp::Gt => vs.iter().any(|v| compare(v, c) == Ordering::Greater),
                    Cmp::Ge => vs.iter().any(|v| compare(v, c) != Ordering::Less),
                    Cmp::Lt => vs.iter().any(|v| compare(v, c) == Ordering::Less),
                    Cmp::Le => vs.iter().any(|v| compare(v, c) != Ordering::Greater),
                }
            }
            Filter::Text {
                prop,
                value,
                mode,
                ignore_case,
            } => {
                let norm = |s: &str| {
                    if *ignore_case {
                        s.to_lowercase()
                    } else {
                        s.to_owned()
                    }
                };
                let needle = norm(value);
                values(prop).iter().any(|v| {
                    let hay = norm(v);
                    match mode {
                        TextMatch::Equals => hay == needle,
                        TextMatch::Prefix => hay.starts_with(&needle),
                        TextMatch::Suffix => hay.ends_with(&needle),
                        TextMatch::Substring => hay.contains(&needle),
                        TextMatch::PrefixOnWords => {
                            hay.starts_with(&needle)
                                || hay.split_whitespace().any(|w| w.starts_with(&needle))
                        }
                    }
                })
            }
        }
    }
}

/// One sort key.
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey<P> {
    /// Property.
    pub prop: P,
    /// Descending.
    pub descending: bool,
}

/// How a face's property names reach the view's data.
pub trait Props {
    /// The face's name of a property (an EWS path, an OData name, a vCard property).
    type Prop;

    /// The view's kept sorted listing that orders by this property, if there is one.
    fn order_key(&self, p: &Self::Prop) -> Option<OrderKey>;

    /// The contacts (of any folder) whose `p` may equal `value`, found through the replica's
    /// indexes; `None` when `p` is not indexed or `value` cannot be looked up.
    fn lookup(&self, mb: &Mailbox<'_>, p: &Self::Prop, value: &str) -> Option<Vec<ContactKey>>;

    /// The values of `p` known without the contact's card (ids, numbers, times), if `p` is
    /// one of those.
    fn identity(&self, mb: &Mailbox<'_>, c: ContactKey, p: &Self::Prop) -> Option<Vec<String>>;

    /// The values of `p` on an item.
    fn values(&self, item: &Item, p: &Self::Prop) -> Vec<String>;

    /// How two values of a sort key compare (default: [`cmp_values`]).
    fn order(&self, a: &[String], b: &[String]) -> Ordering {
        cmp_values(a, b)
    }
}

/// A contact under evaluation: identity values come from the replica, others from its card,
/// built the first time one of them is asked for (and only then).
struct Lazy<'m, 'a, F: Props> {
    mb: &'m Mailbox<'a>,
    props: &'m F,
    folder: VirtualFolder,
    c: ContactKey,
    item: std::cell::OnceCell<Option<Item>>,
}

impl<'m, 'a, F: Props> Lazy<'m, 'a, F> {
    fn new(mb: &'m Mailbox<'a>, props: &'m F, folder: VirtualFolder, c: ContactKey) -> Self {
        Lazy {
            mb,
            props,
            folder,
            c,
            item: std::cell::OnceCell::new(),
        }
    }

    fn values(&self, p: &F::Prop) -> Vec<String> {
        if let Some(v) = self.props.identity(self.mb, self.c, p) {
            return v;
        }
        match self.item.get_or_init(|| self.mb.item(self.folder, self.c)) {
            Some(i) => self.props.values(i, p),
            None => Vec::new(),
        }
    }
}

impl Mailbox<'_> {
    /// A superset of the contacts (of any folder) with a shown e-mail address equal to
    /// `lower` (lower case), placeholders included; `None` when no index answers it (an
    /// integer, which filters compare as a number: "007" equals "7").
    pub fn contacts_by_address(&self, lower: &str) -> Option<Vec<ContactKey>> {
        if lower.trim().parse::<i64>().is_ok() {
            return None;
        }
        let mut v = self.contacts_by_email(lower.trim()).to_vec();
        // Contacts without an address show a placeholder `crm-{id}@{domain}`; its id part is
        // exact when it holds no '-' (the character others are turned into).
        if let Some(domain) = self.placeholder_domain() {
            if let Some(local) = lower
                .strip_suffix(&format!("@{}", domain.to_lowercase()))
                .and_then(|l| l.strip_prefix("crm-"))
            {
                if local.contains('-') {
                    return None;
                }
                v.extend(self.contacts_by_lower_id(local));
            }
        }
        Some(v)
    }

    /// The contacts of folder `f` that match `filter`, in the order of `sort` (ties in
    /// creation order); the face pages through them. Before testing or sorting, the work is
    /// paid for through `spend` (contacts × (filter nodes + sort keys + 1)), so a budget the
    /// face keeps refuses it before it runs.
    pub fn query<F: Props, E>(
        &self,
        f: VirtualFolder,
        filter: Option<&Filter<F::Prop>>,
        sort: &[SortKey<F::Prop>],
        props: &F,
        spend: &mut dyn FnMut(u64) -> Result<(), E>,
    ) -> Result<Arc<Vec<ContactKey>>, E> {
        let nodes = filter.map_or(0, Filter::nodes);
        let fast = match sort {
            [] => Some((OrderKey::Uid, false)),
            [k] => props.order_key(&k.prop).map(|o| (o, k.descending)),
            _ => None,
        };
        // An equality on an identifying property: a few lookups, whatever the folder's size.
        if let Some(mut found) = filter.and_then(|r| self.candidates(r, props)) {
            found.sort_unstable();
            found.dedup();
            found.retain(|c| self.holds(f, *c));
            spend((found.len() as u64).saturating_mul((nodes + sort.len() + 1) as u64))?;
            return Ok(Arc::new(
                self.filter_and_sort(f, found, filter, sort, props),
            ));
        }
        // A sort the view keeps listings for: the filter keeps that listing's order.
        if let Some((key, desc)) = fast {
            let order = self.ordered(f, key, desc);
            let Some(r) = filter else {
                return Ok(order);
            };
            spend((order.len() as u64).saturating_mul((nodes + 1) as u64))?;
            let kept = order
                .iter()
                .copied()
                .filter(|c| {
                    let lazy = Lazy::new(self, props, f, *c);
                    r.matches(&|p| lazy.values(p))
                })
                .collect();
            return Ok(Arc::new(kept));
        }
        let contacts = self.contacts(f);
        spend((contacts.len() as u64).saturating_mul((nodes + sort.len() + 1) as u64))?;
        Ok(Arc::new(
            self.filter_and_sort(f, contacts, filter, sort, props),
        ))
    }

    /// A superset of the contacts (of any folder) a filter can match, found through the
    /// indexes; `None` when the filter names no indexed property in a way that bounds them.
    fn candidates<F: Props>(&self, r: &Filter<F::Prop>, props: &F) -> Option<Vec<ContactKey>> {
        match r {
            Filter::Compare(p, Cmp::Eq, v) => props.lookup(self, p, v),
            Filter::Text {
                prop,
                value,
                mode: TextMatch::Equals,
                ignore_case: true,
            } => props.lookup(self, prop, value),
            // Any bounded conjunct bounds the conjunction.
            Filter::And(rs) => rs
                .iter()
                .filter_map(|r| self.candidates(r, props))
                .min_by_key(Vec::len),
            // A disjunction is bounded when every disjunct is.
            Filter::Or(rs) if !rs.is_empty() => {
                let mut all = Vec::new();
                for r in rs {
                    all.extend(self.candidates(r, props)?);
                }
                Some(all)
            }
            _ => None,
        }
    }

    /// The contacts of `cs` that match, in the order of `sort`, then by creation.
    fn filter_and_sort<F: Props>(
        &self,
        f: VirtualFolder,
        cs: Vec<ContactKey>,
        filter: Option<&Filter<F::Prop>>,
        sort: &[SortKey<F::Prop>],
        props: &F,
    ) -> Vec<ContactKey> {
        // Sort keys computed once per contact, then a stable order: the keys, then the uid.
        let mut keyed: Vec<(Vec<Vec<String>>, u64, ContactKey)> = cs
            .into_iter()
            .filter_map(|c| {
                let lazy = Lazy::new(self, props, f, c);
                if filter.is_some_and(|r| !r.matches(&|p| lazy.values(p))) {
                    return None;
                }
                let keys = sort.iter().map(|k| lazy.values(&k.prop)).collect();
                Some((keys, self.contact_uid(c), c))
            })
            .collect();
        keyed.sort_by(|a, b| {
            for (n, k) in sort.iter().enumerate() {
                let o = props.order(&a.0[n], &b.0[n]);
                let o = if k.descending { o.reverse() } else { o };
                if o.is_ne() {
                    return o;
                }
            }
            a.1.cmp(&b.1)
        });
        keyed.into_iter().map(|(_, _, c)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_evaluate() {
        let vals = |p: &&str| match *p {
            "name" => vec!["Eva Klein".to_string()],
            "n" => vec!["42".to_string()],
            _ => vec![],
        };
        let text = |mode, ignore_case, value: &str| Filter::Text {
            prop: "name",
            value: value.into(),
            mode,
            ignore_case,
        };
        assert!(text(TextMatch::Substring, true, "klein").matches(&vals));
        assert!(!text(TextMatch::Substring, false, "klein").matches(&vals));
        assert!(text(TextMatch::Suffix, true, "KLEIN").matches(&vals));
        assert!(!text(TextMatch::Prefix, true, "klein").matches(&vals));
        assert!(text(TextMatch::PrefixOnWords, true, "kl").matches(&vals));
        assert!(text(TextMatch::Equals, true, "eva klein").matches(&vals));
        let or = Filter::Or(vec![
            Filter::Compare("n", Cmp::Eq, "042".into()),
            Filter::Exists("surname"),
        ]);
        assert!(or.matches(&vals), "numbers compare as numbers");
        assert!(!Filter::Compare("n", Cmp::Gt, "100".into()).matches(&vals));
        assert!(Filter::Not(Box::new(Filter::Exists("surname"))).matches(&vals));
        assert_eq!(or.nodes(), 3);
        assert_eq!(cmp_values(&[], &["a".into()]), Ordering::Less);
        assert_eq!(compare("9", "10"), Ordering::Less);
        assert_eq!(compare("b", "A"), Ordering::Greater);
    }
}

//! Newtype ids. All ids are CRM ids as strings; the newtypes keep a company id from being
//! passed where a contact id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as the CRM spells it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

id_type!(
    /// A subsystem (tenant) id.
    SubsystemId
);
id_type!(
    /// A CRM user id.
    UserId
);
id_type!(
    /// A company id.
    CompanyId
);
id_type!(
    /// A contact person id.
    ContactId
);
id_type!(
    /// A project id.
    ProjectId
);
id_type!(
    /// A lead id.
    LeadId
);

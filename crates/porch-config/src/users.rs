//! `user`/`group` to ids through the system's user and group databases.
//!
//! The only `unsafe` code of the crate: libc's lookups are the one way to honour NSS
//! (LDAP, sssd, ...) as `id` and `su` do. The crate root denies `unsafe` everywhere else.

use std::ffi::CString;

use crate::ConfigError;

/// Resolves `user`/`group` (names or numbers) to `(uid, gid)`; the group defaults to the
/// user's own.
pub(crate) fn run_as(
    user: Option<String>,
    group: Option<String>,
) -> Result<Option<(u32, u32)>, ConfigError> {
    let Some(user) = user else {
        if group.is_some() {
            return Err(ConfigError::value(
                "group",
                group.unwrap_or_default(),
                "a `user` to go with it",
            ));
        }
        return Ok(None);
    };
    let (uid, user_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, lookup_user_gid_by_uid(uid).unwrap_or(uid)),
        Err(_) => lookup_user(&user)
            .ok_or_else(|| ConfigError::value("user", &user, "an existing user name or a uid"))?,
    };
    let gid = match group {
        None => user_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_group(&g).ok_or_else(|| {
                ConfigError::value("group", &g, "an existing group name or a gid")
            })?,
        },
    };
    Ok(Some((uid, gid)))
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call. getpwnam
    // returns a pointer to static storage or null; we copy the two ids out at once,
    // before any other call could overwrite it (config is built on one thread).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    // SAFETY: `pw` is non-null here and points to the record getpwnam just filled.
    (!pw.is_null()).then(|| unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn lookup_user_gid_by_uid(uid: u32) -> Option<u32> {
    // SAFETY: as in `lookup_user`; getpwuid takes a plain integer.
    let pw = unsafe { libc::getpwuid(uid) };
    // SAFETY: `pw` is non-null here and points to the record getpwuid just filled.
    (!pw.is_null()).then(|| unsafe { (*pw).pw_gid })
}

fn lookup_group(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: as in `lookup_user`, for the group database.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    // SAFETY: `gr` is non-null here and points to the record getgrnam just filled.
    (!gr.is_null()).then(|| unsafe { (*gr).gr_gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_need_no_database_and_a_group_needs_a_user() {
        assert_eq!(run_as(None, None).unwrap(), None);
        assert_eq!(
            run_as(Some("12345".into()), Some("678".into())).unwrap(),
            Some((12345, 678))
        );
        let err = run_as(None, Some("0".into())).unwrap_err().to_string();
        assert!(err.contains("`group`") && err.contains("user"), "{err}");
    }
}

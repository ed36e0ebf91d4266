//! The `user` and `group` fields: the identity a unit's commands run as,
//! looked up in the user and group databases when the file is loaded.

use super::checker::Checker;
use super::types::RunAs;
use serde_yaml_ng::Value;

pub(super) fn resolve(
    c: &mut Checker<'_>,
    user: Option<&Value>,
    group: Option<&Value>,
) -> Option<RunAs> {
    let group_name = group.and_then(|v| c.string("group", v));
    let gid_of_group =
        group_name
            .as_ref()
            .and_then(|name| match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => Some(g.gid.as_raw()),
                Ok(None) => match name.parse::<u32>() {
                    Ok(gid) => Some(gid),
                    Err(_) => {
                        c.error("group", Some(&Value::String(name.clone())), "no such group");
                        None
                    }
                },
                Err(e) => {
                    c.error(
                        "group",
                        Some(&Value::String(name.clone())),
                        format!("cannot look up the group: {e}"),
                    );
                    None
                }
            });
    let Some(user_value) = user else {
        if group_name.is_some() {
            c.error("group", group, "needs `user` too");
        }
        return None;
    };
    let name = c.string("user", user_value)?;
    let found = match nix::unistd::User::from_name(&name) {
        Ok(Some(u)) => Some((u.uid.as_raw(), u.gid.as_raw(), u.dir, u.shell)),
        Ok(None) => None,
        Err(e) => {
            c.error(
                "user",
                Some(user_value),
                format!("cannot look up the user: {e}"),
            );
            return None;
        }
    };
    let Some((uid, user_gid, home, shell)) = found else {
        c.error("user", Some(user_value), "no such user");
        return None;
    };
    let gid = gid_of_group.unwrap_or(user_gid);
    let groups = std::ffi::CString::new(name.clone())
        .ok()
        .and_then(|cname| nix::unistd::getgrouplist(&cname, nix::unistd::Gid::from_raw(gid)).ok())
        .map(|list| list.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|| vec![gid]);
    Some(RunAs {
        user: name,
        uid,
        gid,
        groups,
        home,
        shell,
    })
}

//! The subscription tree: topic filters indexed by level, so a PUBLISH finds its subscribers by
//! walking the levels of its topic once, whatever the number of subscriptions.
//!
//! Wildcards: `+` matches one level, `#` the rest (including none: `a/#` matches `a`).
//! Topics starting with `$` are not matched by a `+` or `#` in the first level (MQTT 4.7.2).
//! Shared subscriptions (`$share/{group}/{filter}`) are stored once per group; a match picks one
//! member of each group, round robin.

use std::collections::HashMap;

/// A session's handle in the broker (dense ids, cheap to copy and hash).
pub type ClientId = u32;

/// What a subscription asks for (MQTT 5 subscription options; 3.1.1 uses only `qos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOptions {
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// MQTT 5 subscription identifier (0 = none).
    pub identifier: u32,
}

/// The members of one shared-subscription group and the next one to pick.
#[derive(Debug, Default)]
struct Group {
    members: Vec<(ClientId, SubOptions)>,
    next: usize,
}

type Groups = HashMap<Box<str>, Group>;

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    /// Subscriptions ending at this node (filter's last level is this one).
    here: Vec<(ClientId, SubOptions)>,
    /// Subscriptions whose filter continues with `#` after this node.
    hash: Vec<(ClientId, SubOptions)>,
    /// Shared subscriptions, per group: (members, next member to pick).
    shared_here: Groups,
    shared_hash: Groups,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.here.is_empty()
            && self.hash.is_empty()
            && self.shared_here.is_empty()
            && self.shared_hash.is_empty()
    }
}

/// One delivery a PUBLISH owes: the client and the strongest of its matching subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub client: ClientId,
    pub options: SubOptions,
    /// MQTT 5: every matching subscription's identifier (non-zero ones).
    pub identifiers: Vec<u32>,
    /// Whether the delivery comes from a shared subscription (retained messages are not sent
    /// for those, and `no_local` does not apply the same way).
    pub shared: bool,
}

/// Splits `$share/{group}/{filter}` into (group, filter); `None` for a normal filter (filters
/// reaching the tree were validated by [`crate::topic::validate_topic_filter`]).
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    crate::topic::split_shared(filter)
        .ok()
        .flatten()
        .map(|s| (s.group, s.filter))
}

#[derive(Debug, Default)]
pub struct SubTree {
    root: Node,
    len: usize,
}

fn upsert(list: &mut Vec<(ClientId, SubOptions)>, client: ClientId, opts: SubOptions) -> bool {
    match list.iter_mut().find(|(c, _)| *c == client) {
        Some(e) => {
            e.1 = opts;
            false
        }
        None => {
            list.push((client, opts));
            true
        }
    }
}

fn remove(list: &mut Vec<(ClientId, SubOptions)>, client: ClientId) -> bool {
    let before = list.len();
    list.retain(|(c, _)| *c != client);
    list.len() != before
}

impl SubTree {
    pub fn new() -> SubTree {
        SubTree::default()
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds or replaces `client`'s subscription to `filter` (already validated). Returns true if
    /// it is new, false if it replaced an existing one (MQTT: same filter → replace options).
    pub fn subscribe(&mut self, filter: &str, client: ClientId, opts: SubOptions) -> bool {
        let (group, filter) = match split_shared(filter) {
            Some((g, f)) => (Some(g), f),
            None => (None, filter),
        };
        let mut node = &mut self.root;
        let mut is_hash = false;
        for level in filter.split('/') {
            if level == "#" {
                is_hash = true;
                break;
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                node.children.entry(level.into()).or_default()
            };
        }
        let new = match (group, is_hash) {
            (None, false) => upsert(&mut node.here, client, opts),
            (None, true) => upsert(&mut node.hash, client, opts),
            (Some(g), false) => upsert(
                &mut node.shared_here.entry(g.into()).or_default().members,
                client,
                opts,
            ),
            (Some(g), true) => upsert(
                &mut node.shared_hash.entry(g.into()).or_default().members,
                client,
                opts,
            ),
        };
        if new {
            self.len += 1;
        }
        new
    }

    /// Removes `client`'s subscription to `filter`; returns whether it existed.
    pub fn unsubscribe(&mut self, filter: &str, client: ClientId) -> bool {
        let (group, filter) = match split_shared(filter) {
            Some((g, f)) => (Some(g), f),
            None => (None, filter),
        };
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = Self::remove_at(&mut self.root, &levels, group, client);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_at(node: &mut Node, levels: &[&str], group: Option<&str>, client: ClientId) -> bool {
        let Some((&level, rest)) = levels.split_first() else {
            return match group {
                None => remove(&mut node.here, client),
                Some(g) => remove_shared(&mut node.shared_here, g, client),
            };
        };
        if level == "#" {
            return match group {
                None => remove(&mut node.hash, client),
                Some(g) => remove_shared(&mut node.shared_hash, g, client),
            };
        }
        if level == "+" {
            let Some(child) = node.plus.as_deref_mut() else {
                return false;
            };
            let removed = Self::remove_at(child, rest, group, client);
            if removed && child.is_empty() {
                node.plus = None;
            }
            removed
        } else {
            let Some(child) = node.children.get_mut(level) else {
                return false;
            };
            let removed = Self::remove_at(child, rest, group, client);
            if removed && child.is_empty() {
                node.children.remove(level);
            }
            removed
        }
    }

    /// Everyone a PUBLISH on `topic` goes to: one entry per client (strongest QoS of its
    /// matching subscriptions) plus one member per shared group.
    pub fn matches(&mut self, topic: &str, out: &mut Vec<Match>) {
        out.clear();
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        Self::walk(&mut self.root, &levels, 0, dollar, out);
        // One delivery per client: merge duplicates (max QoS, all identifiers).
        if out.len() > 1 {
            out.sort_by_key(|m| (m.shared, m.client));
            let mut merged: Vec<Match> = Vec::with_capacity(out.len());
            for m in out.drain(..) {
                match merged.last_mut() {
                    Some(last) if !m.shared && !last.shared && last.client == m.client => {
                        last.options.qos = last.options.qos.max(m.options.qos);
                        last.options.retain_as_published |= m.options.retain_as_published;
                        last.options.no_local &= m.options.no_local;
                        last.identifiers.extend(m.identifiers);
                    }
                    _ => merged.push(m),
                }
            }
            *out = merged;
        }
    }

    fn push_all(list: &[(ClientId, SubOptions)], out: &mut Vec<Match>) {
        out.extend(list.iter().map(|&(client, options)| Match {
            client,
            options,
            identifiers: if options.identifier != 0 {
                vec![options.identifier]
            } else {
                Vec::new()
            },
            shared: false,
        }));
    }

    fn pick_shared(groups: &mut Groups, out: &mut Vec<Match>) {
        for g in groups.values_mut() {
            if g.members.is_empty() {
                continue;
            }
            let (client, options) = g.members[g.next % g.members.len()];
            g.next = g.next.wrapping_add(1);
            out.push(Match {
                client,
                options,
                identifiers: if options.identifier != 0 {
                    vec![options.identifier]
                } else {
                    Vec::new()
                },
                shared: true,
            });
        }
    }

    fn walk(node: &mut Node, levels: &[&str], depth: usize, dollar: bool, out: &mut Vec<Match>) {
        let wild_ok = !(dollar && depth == 0);
        if wild_ok {
            Self::push_all(&node.hash, out);
            Self::pick_shared(&mut node.shared_hash, out);
        }
        let Some((&level, rest)) = levels.split_first() else {
            Self::push_all(&node.here, out);
            Self::pick_shared(&mut node.shared_here, out);
            return;
        };
        if let Some(child) = node.children.get_mut(level) {
            Self::walk(child, rest, depth + 1, dollar, out);
        }
        if wild_ok {
            if let Some(child) = node.plus.as_deref_mut() {
                Self::walk(child, rest, depth + 1, dollar, out);
            }
        }
    }
}

fn remove_shared(groups: &mut Groups, group: &str, client: ClientId) -> bool {
    let Some(g) = groups.get_mut(group) else {
        return false;
    };
    let removed = remove(&mut g.members, client);
    if g.members.is_empty() {
        groups.remove(group);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::topic_matches;

    fn q(qos: u8) -> SubOptions {
        SubOptions {
            qos,
            ..SubOptions::default()
        }
    }

    fn clients(tree: &mut SubTree, topic: &str) -> Vec<(ClientId, u8)> {
        let mut out = Vec::new();
        tree.matches(topic, &mut out);
        let mut v: Vec<_> = out.iter().map(|m| (m.client, m.options.qos)).collect();
        v.sort();
        v
    }

    #[test]
    fn wildcards_and_dollar_topics() {
        let mut t = SubTree::new();
        t.subscribe("a/b/c", 1, q(0));
        t.subscribe("a/+/c", 2, q(1));
        t.subscribe("a/#", 3, q(2));
        t.subscribe("#", 4, q(0));
        t.subscribe("+/b/+", 5, q(0));
        t.subscribe("$SYS/#", 6, q(0));
        assert_eq!(
            clients(&mut t, "a/b/c"),
            vec![(1, 0), (2, 1), (3, 2), (4, 0), (5, 0)]
        );
        assert_eq!(
            clients(&mut t, "a"),
            vec![(3, 2), (4, 0)],
            "a/# matches its parent"
        );
        assert_eq!(clients(&mut t, "a/x/c/d"), vec![(3, 2), (4, 0)]);
        assert_eq!(
            clients(&mut t, "$SYS/load"),
            vec![(6, 0)],
            "no leading wildcard matches $ topics"
        );
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn overlapping_subscriptions_deliver_once_with_max_qos() {
        let mut t = SubTree::new();
        t.subscribe(
            "a/#",
            1,
            SubOptions {
                qos: 0,
                identifier: 7,
                ..SubOptions::default()
            },
        );
        t.subscribe(
            "a/b",
            1,
            SubOptions {
                qos: 2,
                identifier: 9,
                ..SubOptions::default()
            },
        );
        let mut out = Vec::new();
        t.matches("a/b", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].options.qos, 2);
        let mut ids = out[0].identifiers.clone();
        ids.sort();
        assert_eq!(ids, vec![7, 9]);
        // Re-subscribing replaces the options.
        assert!(!t.subscribe("a/b", 1, q(1)));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn shared_subscriptions_pick_one_member_round_robin() {
        let mut t = SubTree::new();
        t.subscribe("$share/g/sensors/+", 1, q(1));
        t.subscribe("$share/g/sensors/+", 2, q(1));
        t.subscribe("sensors/#", 3, q(0));
        let mut picked = Vec::new();
        for _ in 0..4 {
            let mut out = Vec::new();
            t.matches("sensors/t1", &mut out);
            assert_eq!(out.len(), 2, "{out:?}");
            picked.push(out.iter().find(|m| m.shared).map(|m| m.client));
        }
        assert_eq!(picked, vec![Some(1), Some(2), Some(1), Some(2)]);
        assert!(t.unsubscribe("$share/g/sensors/+", 1));
        let mut out = Vec::new();
        t.matches("sensors/t1", &mut out);
        assert!(out.iter().any(|m| m.shared && m.client == 2));
    }

    #[test]
    fn unsubscribe_prunes_and_reports() {
        let mut t = SubTree::new();
        t.subscribe("a/+/c/#", 1, q(0));
        assert!(!t.unsubscribe("a/+/c", 1));
        assert!(t.unsubscribe("a/+/c/#", 1));
        assert!(!t.unsubscribe("a/+/c/#", 1));
        assert!(t.is_empty());
        assert!(t.root.is_empty(), "empty branches are pruned");
    }

    #[test]
    fn agrees_with_the_reference_matcher() {
        let filters = [
            "#", "+", "+/+", "a/#", "a/+", "a/b", "+/b/#", "a/+/+", "$SYS/#", "+/#", "a/b/#",
            "b/+/c",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "b", "b/x/c", "$SYS/x", "a/b/c/d", "c/b", "/", "a/", "/a",
        ];
        let mut t = SubTree::new();
        for (i, f) in filters.iter().enumerate() {
            t.subscribe(f, i as ClientId, q(0));
        }
        for topic in topics {
            let expected: Vec<(ClientId, u8)> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| topic_matches(f, topic))
                .map(|(i, _)| (i as ClientId, 0))
                .collect();
            assert_eq!(clients(&mut t, topic), expected, "topic {topic:?}");
        }
    }
}

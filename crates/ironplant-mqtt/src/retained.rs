//! Retained messages, indexed by topic level so a new subscription finds every retained message
//! its filter matches without scanning them all.

use std::collections::HashMap;

#[derive(Debug)]
struct Node<M> {
    children: HashMap<Box<str>, Node<M>>,
    msg: Option<M>,
}

impl<M> Default for Node<M> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            msg: None,
        }
    }
}

/// Retained messages by topic. `M` is the broker's stored message type.
#[derive(Debug)]
pub struct RetainedStore<M> {
    root: Node<M>,
    len: usize,
}

impl<M> Default for RetainedStore<M> {
    fn default() -> Self {
        RetainedStore {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<M> RetainedStore<M> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores (or, with `None`, clears: a retained PUBLISH with an empty payload) the message of
    /// `topic`. Returns the previous one.
    pub fn set(&mut self, topic: &str, msg: Option<M>) -> Option<M> {
        match msg {
            Some(m) => {
                let mut node = &mut self.root;
                for level in topic.split('/') {
                    node = node.children.entry(level.into()).or_default();
                }
                let old = node.msg.replace(m);
                if old.is_none() {
                    self.len += 1;
                }
                old
            }
            None => {
                let levels: Vec<&str> = topic.split('/').collect();
                let old = Self::clear(&mut self.root, &levels);
                if old.is_some() {
                    self.len -= 1;
                }
                old
            }
        }
    }

    fn clear(node: &mut Node<M>, levels: &[&str]) -> Option<M> {
        let Some((&level, rest)) = levels.split_first() else {
            return node.msg.take();
        };
        let child = node.children.get_mut(level)?;
        let old = Self::clear(child, rest);
        if child.msg.is_none() && child.children.is_empty() {
            node.children.remove(level);
        }
        old
    }

    pub fn get(&self, topic: &str) -> Option<&M> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.msg.as_ref()
    }

    /// Every retained message whose topic `filter` matches, with its topic.
    pub fn matching(&self, filter: &str) -> Vec<(String, &M)> {
        let levels: Vec<&str> = filter.split('/').collect();
        let mut out = Vec::new();
        let mut path = Vec::new();
        Self::walk(&self.root, &levels, &mut path, &mut out);
        out
    }

    fn walk<'a>(
        node: &'a Node<M>,
        levels: &[&str],
        path: &mut Vec<&'a str>,
        out: &mut Vec<(String, &'a M)>,
    ) {
        let first = path.is_empty();
        let Some((&level, rest)) = levels.split_first() else {
            if let Some(m) = &node.msg {
                out.push((path.join("/"), m));
            }
            return;
        };
        match level {
            "#" => {
                // This node (the parent) and everything below, but no `$` topics from the root.
                if let Some(m) = &node.msg {
                    if !first {
                        out.push((path.join("/"), m));
                    }
                }
                Self::collect_all(node, path, first, out);
            }
            "+" => {
                for (name, child) in &node.children {
                    if first && name.starts_with('$') {
                        continue;
                    }
                    path.push(name);
                    Self::walk(child, rest, path, out);
                    path.pop();
                }
            }
            exact => {
                if let Some((name, child)) = node.children.get_key_value(exact) {
                    path.push(name);
                    Self::walk(child, rest, path, out);
                    path.pop();
                }
            }
        }
    }

    fn collect_all<'a>(
        node: &'a Node<M>,
        path: &mut Vec<&'a str>,
        first: bool,
        out: &mut Vec<(String, &'a M)>,
    ) {
        for (name, child) in &node.children {
            if first && name.starts_with('$') {
                continue;
            }
            path.push(name);
            if let Some(m) = &child.msg {
                out.push((path.join("/"), m));
            }
            Self::collect_all(child, path, false, out);
            path.pop();
        }
    }

    /// Every retained message, for persistence.
    pub fn all(&self) -> Vec<(String, &M)> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        Self::collect_all(&self.root, &mut path, false, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::topic_matches;

    fn matches_reference<M>(store: &RetainedStore<M>, filter: &str) -> Vec<String> {
        let mut v: Vec<String> = store
            .all()
            .into_iter()
            .map(|(t, _)| t)
            .filter(|t| topic_matches(filter, t))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn set_clear_and_match_like_the_reference() {
        let mut s = RetainedStore::new();
        for t in [
            "a", "a/b", "a/b/c", "a/x/c", "b/b", "$SYS/up", "/lead", "trail/", "a//c",
        ] {
            s.set(t, Some(t.len()));
        }
        assert_eq!(s.len(), 9);
        for f in [
            "#", "a/#", "+", "+/+", "a/+/c", "+/b", "$SYS/#", "+/#", "a/b", "/+", "+/", "a/+/+",
            "a/+",
        ] {
            let mut got: Vec<String> = s.matching(f).into_iter().map(|(t, _)| t).collect();
            got.sort();
            assert_eq!(got, matches_reference(&s, f), "filter {f:?}");
        }
        assert_eq!(s.set("a/b", None), Some(3));
        assert_eq!(s.set("a/b", None), None);
        assert_eq!(
            s.get("a/b/c"),
            Some(&5),
            "clearing a parent keeps its children"
        );
        assert_eq!(s.len(), 8);
        s.set("a/b/c", None);
        assert!(s.get("a/b/c").is_none());
    }
}

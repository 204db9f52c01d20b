package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// resolver turns soci-snapshotter's [resolver.host."HOST"] mirror lists
// into containerd hosts.toml files, the format ociseek's registry access
// follows: the mirrors in order, each for pull and resolve as soci uses
// them, then the registry itself as server.
func (m *migrator) resolver(resolver map[string]any) {
	keys := sortedKeys(resolver)
	for _, k := range keys {
		if !strings.EqualFold(k, "host") {
			m.apply(leaf{path: []string{"resolver", k}, value: resolver[k]})
			continue
		}
		hosts, ok := resolver[k].(map[string]any)
		if !ok {
			m.skip(dotted([]string{"resolver", k}), "expected a table of registry hosts, got %s", describe(resolver[k]))
			continue
		}
		for _, host := range sortedKeys(hosts) {
			m.host(host, hosts[host])
		}
	}
}

// host migrates [resolver.host."HOST"].
func (m *migrator) host(host string, v any) {
	name := dotted([]string{"resolver", "host", host})
	t, ok := v.(map[string]any)
	if !ok {
		m.skip(name, "expected a table, got %s", describe(v))
		return
	}
	var mirrors []string
	for _, k := range sortedKeys(t) {
		if !strings.EqualFold(k, "mirrors") {
			m.skip(name+"."+dotted([]string{k}), "unknown to soci-snapshotter (which ignores unknown keys); nothing to carry over")
			continue
		}
		list, ok := t[k].([]any)
		if !ok {
			m.skip(name+"."+k, "expected an array of mirror tables, got %s", describe(t[k]))
			continue
		}
		for i, e := range list {
			if u, ok := m.mirror(fmt.Sprintf("%s.%s[%d]", name, k, i), e); ok {
				mirrors = append(mirrors, u)
			}
		}
	}
	if len(mirrors) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# From soci-snapshotter [%s]: its mirrors in order, then the registry itself.\n", name)
	fmt.Fprintf(&b, "server = %s\n", tomlString(serverURL(host)))
	for _, u := range mirrors {
		fmt.Fprintf(&b, "\n[host.%s]\n  capabilities = [\"pull\", \"resolve\"]\n", tomlString(u))
	}
	m.hosts = append(m.hosts, HostsFile{Host: host, Text: b.String()})
}

// mirror reads one mirror table and returns its URL.
func (m *migrator) mirror(name string, v any) (string, bool) {
	t, ok := v.(map[string]any)
	if !ok {
		m.skip(name, "expected a mirror table, got %s", describe(v))
		return "", false
	}
	var host string
	insecure := false
	for _, k := range sortedKeys(t) {
		key := name + "." + dotted([]string{k})
		switch strings.ToLower(k) {
		case "host":
			if host, ok = t[k].(string); !ok || host == "" {
				m.skip(key, "expected a host name, got %s", describe(t[k]))
				return "", false
			}
		case "insecure":
			if insecure, ok = t[k].(bool); !ok {
				m.skip(key, "expected true or false, got %s", describe(t[k]))
			}
		case "request_timeout_sec":
			if n, _ := t[k].(int64); n != 0 {
				m.skip(key, "hosts.toml has no per-host timeout; fetch.request_timeout bounds every range request")
			}
		default:
			m.skip(key, "unknown to soci-snapshotter (which ignores unknown keys); nothing to carry over")
		}
	}
	if host == "" {
		m.skip(name, "a mirror without host")
		return "", false
	}
	if strings.Contains(host, "://") {
		return host, true
	}
	if insecure {
		return "http://" + host, true
	}
	return "https://" + host, true
}

// serverURL is the upstream a hosts.toml for host names: Docker Hub's API
// host for docker.io, as containerd maps it.
func serverURL(host string) string {
	if host == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + host
}

// tomlString quotes s as a TOML string.
func tomlString(s string) string {
	b, err := toml.Marshal(map[string]string{"v": s})
	if err != nil {
		return fmt.Sprintf("%q", s) // not reached: any Go string encodes
	}
	return strings.TrimSuffix(strings.TrimPrefix(string(b), "v = "), "\n")
}

// sortedKeys returns t's keys in order.
func sortedKeys(t map[string]any) []string {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

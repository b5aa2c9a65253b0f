// Fetch users from objcached with gomemcache (Debian:
// golang-github-bradfitz-gomemcache-dev), which speaks the text protocol.
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run example.go [ADDRESS]
//	ADDRESS: 127.0.0.1:11311 (default), unix:/path/to.sock or /path/to.sock
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

func main() {
	addr := "127.0.0.1:11311"
	if len(os.Args) > 1 {
		addr = strings.TrimPrefix(os.Args[1], "unix:") // a path with "/": unix socket
	}
	client := memcache.New(addr)
	client.Timeout = 6 * time.Second
	keys := []string{"User:1", "User:2", "User:999999"}
	found, err := client.GetMulti(keys) // one "gets User:1 User:2 User:999999"
	if err != nil {
		fmt.Fprintln(os.Stderr, "get:", err)
		os.Exit(3)
	}
	for _, key := range keys {
		item, ok := found[key]
		if !ok {
			fmt.Printf("%s: not found\n", key)
			continue
		}
		var user struct {
			Name  string `json:"name"`
			Email string `json:"email"`
		}
		if err := json.Unmarshal(item.Value, &user); err != nil {
			fmt.Fprintln(os.Stderr, key+":", err)
			os.Exit(3)
		}
		fmt.Printf("%s = %s <%s>\n", key, user.Name, user.Email)
	}
}

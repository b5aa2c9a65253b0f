// One job (tests/clients/README.md) with gomemcache (text protocol).
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o client client.go
//	./client < job.json
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

type job struct {
	Addr      string   `json:"addr"`
	Get       []string `json:"get"`
	PushKey   string   `json:"push_key"`
	PushValue string   `json:"push_value"`
	Tombstone string   `json:"tombstone"`
	GetOne    string   `json:"get_one"`
}

func b64(it *memcache.Item) *string {
	if it == nil {
		return nil
	}
	s := base64.StdEncoding.EncodeToString(it.Value)
	return &s
}

// get: the item, nil for a miss, exit 3 on any other error.
func get(c *memcache.Client, key string) *memcache.Item {
	it, err := c.Get(key)
	if err == memcache.ErrCacheMiss {
		return nil
	}
	check(err, "get")
	return it
}

func check(err error, what string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(3)
	}
}

func main() {
	var j job
	check(json.NewDecoder(os.Stdin).Decode(&j), "job")
	c := memcache.New(j.Addr) // a path with a "/" is a unix socket
	c.Timeout = 6 * time.Second
	if j.GetOne != "" {
		out := map[string]*string{"one": b64(get(c, j.GetOne))}
		check(json.NewEncoder(os.Stdout).Encode(out), "output")
		return
	}
	found, err := c.GetMulti(j.Get) // one "gets k1 k2 ..."
	check(err, "get_multi")
	out := map[string]interface{}{}
	got := map[string]*string{}
	for _, k := range j.Get {
		got[k] = b64(found[k])
	}
	out["get"] = got
	if j.PushKey == "" {
		check(json.NewEncoder(os.Stdout).Encode(out), "output")
		return
	}
	val, err := base64.StdEncoding.DecodeString(j.PushValue)
	check(err, "push_value")
	err = c.Set(&memcache.Item{Key: j.PushKey, Value: val})
	if err != nil && err != memcache.ErrNotStored {
		check(err, "set")
	}
	out["push"] = err == nil
	out["after_push"] = b64(get(c, j.PushKey))
	err = c.Delete(j.Tombstone)
	if err != nil && err != memcache.ErrCacheMiss {
		check(err, "delete")
	}
	out["tombstone"] = err == nil
	out["after_tombstone"] = b64(get(c, j.Tombstone))
	check(json.NewEncoder(os.Stdout).Encode(out), "output")
}

// Command tlogcheck reads a hushcc log with the Go reference implementation of the tile
// log (golang.org/x/mod/sumdb/tlog and sumdb/note), as a third-party client would.
//
// It checks, with no hushcc code involved:
//   - the checkpoint is a signed note that verifies under the given verifier key,
//   - the tree root recomputed from hash tiles alone equals the checkpoint's root,
//   - every entry (read from the entry bundles) has a valid inclusion proof built from tiles,
//   - with -old-size/-old-root, the tree is consistent with that earlier checkpoint.
//
// x/mod predates C2SP tlog-tiles by one detail: its tile paths name the height
// ("tile/8/L/N"); C2SP fixes the height at 8 and drops it ("tile/L/N"), and calls the data
// tiles "entries" with 2-byte length-prefixed entries. Those are the only adaptations here.
package main

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const height = 8

var base string

func get(path string) ([]byte, error) {
	resp, err := http.Get(base + "/" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// c2spPath maps an x/mod tile to its C2SP tlog-tiles path.
func c2spPath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", height))
	if strings.HasPrefix(p, "data/") {
		return "tile/entries/" + strings.TrimPrefix(p, "data/")
	}
	return "tile/" + p
}

type tiles struct{}

func (tiles) Height() int { return height }

func (tiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, t := range ts {
		data, err := get(c2spPath(t))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (tiles) SaveTiles([]tlog.Tile, [][]byte) {}

// entry returns record i from its C2SP entry bundle (uint16 big-endian length prefixes).
func entry(i, size int64) ([]byte, error) {
	t := tlog.TileForIndex(height, tlog.StoredHashIndex(0, i))
	t.L = -1
	if end := (t.N + 1) << height; end > size {
		t.W = int(size - t.N<<height)
	}
	bundle, err := get(c2spPath(t))
	if err != nil {
		return nil, err
	}
	for k := int64(0); len(bundle) >= 2; k++ {
		n := int(binary.BigEndian.Uint16(bundle))
		if len(bundle) < 2+n {
			break
		}
		if k == i-t.N<<height {
			return bundle[2 : 2+n], nil
		}
		bundle = bundle[2+n:]
	}
	return nil, fmt.Errorf("entry %d not in its bundle", i)
}

func checkpoint(vkey string) (tlog.Tree, error) {
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return tlog.Tree{}, err
	}
	msg, err := get("checkpoint")
	if err != nil {
		return tlog.Tree{}, err
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("checkpoint note: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		return tlog.Tree{}, errors.New("checkpoint: too few lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return tlog.Tree{}, err
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return tlog.Tree{}, errors.New("checkpoint: bad root hash")
	}
	var h tlog.Hash
	copy(h[:], root)
	return tlog.Tree{N: size, Hash: h}, nil
}

func run() error {
	url := flag.String("url", "", "log base URL")
	vkey := flag.String("vkey", "", "verifier key (name+hash+base64)")
	oldSize := flag.Int64("old-size", 0, "size of an earlier checkpoint")
	oldRoot := flag.String("old-root", "", "base64 root of that checkpoint")
	flag.Parse()
	base = strings.TrimRight(*url, "/")
	tree, err := checkpoint(*vkey)
	if err != nil {
		return err
	}
	reader := tlog.TileHashReader(tree, tiles{})
	root, err := tlog.TreeHash(tree.N, reader)
	if err != nil {
		return fmt.Errorf("tree hash from tiles: %w", err)
	}
	if root != tree.Hash {
		return errors.New("root from tiles differs from the checkpoint")
	}
	for i := int64(0); i < tree.N; i++ {
		data, err := entry(i, tree.N)
		if err != nil {
			return err
		}
		proof, err := tlog.ProveRecord(tree.N, i, reader)
		if err != nil {
			return fmt.Errorf("prove record %d: %w", i, err)
		}
		if err := tlog.CheckRecord(proof, tree.N, tree.Hash, i, tlog.RecordHash(data)); err != nil {
			return fmt.Errorf("record %d: %w", i, err)
		}
	}
	if *oldSize > 0 {
		raw, err := base64.StdEncoding.DecodeString(*oldRoot)
		if err != nil || len(raw) != tlog.HashSize {
			return errors.New("bad -old-root")
		}
		var old tlog.Hash
		copy(old[:], raw)
		proof, err := tlog.ProveTree(tree.N, *oldSize, reader)
		if err != nil {
			return fmt.Errorf("prove tree: %w", err)
		}
		if err := tlog.CheckTree(proof, tree.N, tree.Hash, *oldSize, old); err != nil {
			return fmt.Errorf("consistency with size %d: %w", *oldSize, err)
		}
	}
	fmt.Printf("ok: %d entries, root and every inclusion proof verified from tiles\n", tree.N)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tlogcheck:", err)
		os.Exit(1)
	}
}

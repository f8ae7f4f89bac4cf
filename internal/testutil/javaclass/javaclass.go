// Package javaclass writes a tiny Java class file for tests whose image
// has a JVM but no compiler (Debian's openjdk-17-jre-headless has no javac).
package javaclass

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Counter returns the class file of a public class named name whose main
// keeps a counter in a heap object (a long[1]) and, every interval
// milliseconds, increments it and prints "count N":
//
//	public static void main(String[] a) {
//		long[] c = new long[1];
//		for (;;) { c[0]++; System.out.print("count "); System.out.println(c[0]); Thread.sleep(interval); }
//	}
//
// The class file is version 49 (Java 5), which the JVM verifies without
// stack map frames, so that no compiler is needed to build it.
func Counter(name string, intervalMillis int64) ([]byte, error) {
	if name == "" || len(name) > 200 || bytes.ContainsAny([]byte(name), "./;[") {
		return nil, fmt.Errorf("javaclass: bad class name %q", name)
	}
	if intervalMillis <= 0 {
		return nil, fmt.Errorf("javaclass: interval must be positive")
	}
	var cp constPool
	this := cp.class(name)
	super := cp.class("java/lang/Object")
	mainName, mainDesc, code := cp.utf8("main"), cp.utf8("([Ljava/lang/String;)V"), cp.utf8("Code")
	out := cp.ref(9, cp.class("java/lang/System"), "out", "Ljava/io/PrintStream;")
	ps := cp.class("java/io/PrintStream")
	printRef := cp.ref(10, ps, "print", "(Ljava/lang/String;)V")
	printlnRef := cp.ref(10, ps, "println", "(J)V")
	sleep := cp.ref(10, cp.class("java/lang/Thread"), "sleep", "(J)V")
	prefix := cp.add(8, cp.utf8("count "))
	interval := cp.long(intervalMillis)

	u16 := func(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }
	var bc bytes.Buffer
	bc.Write([]byte{0x04, 0xbc, 11, 0x4c}) // iconst_1; newarray long; astore_1
	loop := bc.Len()
	bc.Write([]byte{0x2b, 0x03, 0x5c, 0x2f, 0x0a, 0x61, 0x50}) // aload_1 iconst_0 dup2 laload lconst_1 ladd lastore
	bc.WriteByte(0xb2)                                         // getstatic System.out
	bc.Write(u16(out))
	bc.WriteByte(0x13) // ldc_w "count "
	bc.Write(u16(prefix))
	bc.WriteByte(0xb6) // invokevirtual print(String)
	bc.Write(u16(printRef))
	bc.WriteByte(0xb2)
	bc.Write(u16(out))
	bc.Write([]byte{0x2b, 0x03, 0x2f}) // aload_1 iconst_0 laload
	bc.WriteByte(0xb6)                 // invokevirtual println(long)
	bc.Write(u16(printlnRef))
	bc.WriteByte(0x14) // ldc2_w interval
	bc.Write(u16(interval))
	bc.WriteByte(0xb8) // invokestatic Thread.sleep(long)
	bc.Write(u16(sleep))
	bc.WriteByte(0xa7) // goto loop
	bc.Write(u16(uint16(int16(loop - bc.Len() + 1))))

	var f bytes.Buffer
	w := func(v any) { binary.Write(&f, binary.BigEndian, v) }
	w(uint32(0xCAFEBABE))
	w(uint16(0))  // minor
	w(uint16(49)) // major: Java 5
	w(uint16(cp.next()))
	f.Write(cp.buf.Bytes())
	w(uint16(0x0021)) // public super
	w(this)
	w(super)
	w(uint16(0)) // interfaces
	w(uint16(0)) // fields
	w(uint16(1)) // methods
	w(uint16(0x0009))
	w(mainName)
	w(mainDesc)
	w(uint16(1)) // attributes: Code
	w(code)
	w(uint32(2 + 2 + 4 + bc.Len() + 2 + 2))
	w(uint16(6)) // max stack: array, index, long, long
	w(uint16(2)) // max locals: args, the array
	w(uint32(bc.Len()))
	f.Write(bc.Bytes())
	w(uint16(0)) // exception table
	w(uint16(0)) // attributes
	w(uint16(0)) // class attributes
	return f.Bytes(), nil
}

// constPool builds a class file's constant pool.
type constPool struct {
	buf   bytes.Buffer
	n     uint16 // entries so far (longs count twice)
	utf8s map[string]uint16
}

func (c *constPool) next() uint16 { return c.n + 1 }

func (c *constPool) add(tag byte, refs ...uint16) uint16 {
	c.buf.WriteByte(tag)
	for _, r := range refs {
		binary.Write(&c.buf, binary.BigEndian, r)
	}
	c.n++
	return c.n
}

func (c *constPool) utf8(s string) uint16 {
	if i, ok := c.utf8s[s]; ok {
		return i
	}
	if c.utf8s == nil {
		c.utf8s = map[string]uint16{}
	}
	c.buf.WriteByte(1)
	binary.Write(&c.buf, binary.BigEndian, uint16(len(s)))
	c.buf.WriteString(s)
	c.n++
	c.utf8s[s] = c.n
	return c.n
}

func (c *constPool) class(name string) uint16 { return c.add(7, c.utf8(name)) }

// ref adds a Fieldref (tag 9) or Methodref (tag 10).
func (c *constPool) ref(tag byte, class uint16, name, desc string) uint16 {
	nt := c.add(12, c.utf8(name), c.utf8(desc))
	return c.add(tag, class, nt)
}

func (c *constPool) long(v int64) uint16 {
	c.buf.WriteByte(5)
	binary.Write(&c.buf, binary.BigEndian, v)
	c.n += 2
	return c.n - 1
}

// Which row a row kernel's thread works on, through the row interface's `row_place`: its
// row, its thread in the row, and whether its slot holds a row at all. A slot past the
// last row (the last workgroup's, or the grid's rounding) works on the last row, so that
// every thread reaches every reduction, and must not write.

struct RowAt { row: u32, lane: u32, live: bool }

fn row_at(inv: Invocation, rows: u32) -> RowAt {
    let place = row_place(inv);
    let slot = (inv.wid.x + inv.wid.y * inv.nwg.x) * ROWS + place.x;
    return RowAt(min(slot, rows - 1u), place.y, slot < rows);
}

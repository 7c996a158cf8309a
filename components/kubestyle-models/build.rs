fn main() {
    kubestyle_build::torch_rpath();
}

from chertcast.cli import main

main()

from atls.app import main

main()
